//! The store contract, run unchanged against both adapters.

mod sqlite {
    klaxon_tests::store_contract_tests!(klaxon_tests::sqlite_store);
}

mod dynamodb {
    klaxon_tests::store_contract_tests!(klaxon_tests::dynamo_store);
}
