//! The queue contract, run unchanged against both adapters.

mod sqlite {
    klaxon_tests::queue_contract_tests!(klaxon_tests::sqlite_queue);
}

mod sqs {
    klaxon_tests::queue_contract_tests!(klaxon_tests::sqs_queue);
}
