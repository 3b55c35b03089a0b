//! `klaxon config push` / `show` and the functions' loading of the deployed configuration, on
//! moto's DynamoDB and SSM.

use klaxon::deployed::{LiveConfig, PushError, PushOptions, push};
use klaxon::repo::config::ConfigRepo;
use klaxon::secrets::SsmSecrets;
use std::sync::Arc;
use std::time::Duration;

struct Aws {
    repo: ConfigRepo,
    ssm: SsmSecrets,
    client: aws_sdk_ssm::Client,
    /// Unique per test: tests share one moto server.
    prefix: String,
}

async fn aws() -> Option<Aws> {
    let endpoint = klaxon_tests::aws_endpoint()?;
    let t = klaxon_tests::dynamo_store().await?;
    let client = aws_sdk_ssm::Client::new(&klaxon_tests::aws_sdk_config(&endpoint).await);
    let prefix = format!("/{}/", klaxon_tests::unique_name("klaxon"));
    Some(Aws { repo: ConfigRepo::new(t.store.clone()), ssm: SsmSecrets::new(client.clone()), client, prefix })
}

impl Aws {
    fn options(&self, put_secrets: bool) -> PushOptions {
        PushOptions { put_secrets, prefix: self.prefix.clone(), pushed_by: "ops".into() }
    }

    async fn param(&self, name: &str) -> Option<String> {
        let out = self.client.get_parameter().name(name).with_decryption(true).send().await.ok()?;
        out.parameter()?.value().map(str::to_string)
    }

    /// A file whose one secret is the source token, written as `token_ref`.
    fn file(&self, token_ref: &str) -> String {
        format!("version = 1\n[[sources]]\nid = \"freezer\"\nkind = \"particle\"\ntoken = \"{token_ref}\"\n")
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[tokio::test]
async fn push_show_and_load_at_cold_start_with_the_secret_from_ssm() {
    let Some(a) = aws().await else { return };
    let param = format!("{}particle-key", a.prefix);
    a.ssm.put(&param, "particle-key-0123456789").await.unwrap();
    let text = a.file(&format!("${{ssm:{param}}}"));
    let d = push(&text, "klaxon.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap();
    assert_eq!((d.version, d.text.as_str(), d.pushed_by.as_str()), (1, text.as_str(), "ops"));

    let shown = klaxon::deployed::describe(&a.repo.current().await.unwrap().unwrap(), "tbl");
    assert!(shown.starts_with("# klaxon.toml version 1 in table tbl, pushed ") && shown.ends_with(&text), "{shown}");
    assert!(!shown.contains("particle-key-0123456789"), "show prints references, never values");

    let live = LiveConfig::load(a.repo.clone(), a.ssm.clone(), Duration::from_secs(60)).await.unwrap();
    let config = live.current().await;
    assert_eq!(config.sources[0].token.as_ref().unwrap().expose(), "particle-key-0123456789");
    assert_eq!(live.version().await, 1);
}

#[tokio::test]
async fn put_secrets_stores_environment_secrets_in_ssm_and_deploys_references() {
    let Some(a) = aws().await else { return };
    let env = |name: &str| (name == "PARTICLE_KEY").then(|| "from-the-shell-0123456789".to_string());
    let d = push(&a.file("${PARTICLE_KEY}"), "klaxon.toml", &a.repo, &a.ssm, &env, &a.options(true)).await.unwrap();
    let param = format!("{}particle-key", a.prefix);
    assert!(d.text.contains(&format!("token = \"${{ssm:{param}}}\"")), "{}", d.text);
    assert!(!d.text.contains("from-the-shell"), "the table holds a reference, not the value");
    assert_eq!(a.param(&param).await.as_deref(), Some("from-the-shell-0123456789"));
    let live = LiveConfig::load(a.repo.clone(), a.ssm.clone(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(live.current().await.sources[0].token.as_ref().unwrap().expose(), "from-the-shell-0123456789");
}

#[tokio::test]
async fn an_invalid_push_is_refused_and_changes_nothing() {
    let Some(a) = aws().await else { return };
    let param = format!("{}particle-key", a.prefix);
    a.ssm.put(&param, "particle-key-0123456789").await.unwrap();
    push(&a.file(&format!("${{ssm:{param}}}")), "v1.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap();

    let missing = format!("{}no-such-key", a.prefix);
    let err = push(&a.file(&format!("${{ssm:{missing}}}")), "v2.toml", &a.repo, &a.ssm, &no_env, &a.options(false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&missing), "the missing parameter is named: {err}");

    let err = push(&a.file("literal-key-0123456789"), "v2.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await;
    let err = err.unwrap_err();
    assert!(matches!(&err, PushError::NotDeployable { .. }) && err.to_string().contains("sources[0].token"), "{err}");
    assert!(!err.to_string().contains("literal-key-0123456789"), "{err}");

    let err = push(&a.file("${PARTICLE_KEY}"), "v2.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await;
    assert!(err.unwrap_err().to_string().contains("--put-secrets"));

    let outside = "/elsewhere/particle-key";
    let file = a.file(&format!("${{ssm:{outside}}}"));
    let err = push(&file, "v2.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap_err();
    assert!(err.to_string().contains("may not read"), "{err}");

    let env = |name: &str| (name == "PARTICLE_KEY").then(|| "short".to_string());
    let bad =
        format!("{}\n[[sources]]\nid = \"freezer\"\nkind = \"particle\"\ninsecure = true\n", a.file("${PARTICLE_KEY}"));
    let err = push(&bad, "v2.toml", &a.repo, &a.ssm, &env, &a.options(true)).await.unwrap_err();
    assert!(matches!(err, PushError::Config(_)), "{err}");
    assert_eq!(
        a.param(&format!("{}particle-key", a.prefix)).await.as_deref(),
        Some("particle-key-0123456789"),
        "--put-secrets stored nothing for an invalid file"
    );

    let syntax = push("version = 1\n[server\n", "v2.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await;
    assert!(syntax.unwrap_err().to_string().contains("line 2"));

    assert_eq!(a.repo.current().await.unwrap().unwrap().version, 1, "still version 1");
}

#[tokio::test]
async fn the_functions_pick_up_a_new_version_after_the_cache_and_keep_a_working_one() {
    let Some(a) = aws().await else { return };
    let param = format!("{}particle-key", a.prefix);
    a.ssm.put(&param, "particle-key-0123456789").await.unwrap();
    let v1 = a.file(&format!("${{ssm:{param}}}"));
    push(&v1, "v1.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap();
    let live = LiveConfig::load(a.repo.clone(), a.ssm.clone(), Duration::from_millis(200)).await.unwrap();
    assert_eq!(live.current().await.sources.len(), 1);

    let v2 = format!("{v1}[[sources]]\nid = \"lab\"\nkind = \"particle\"\ninsecure = true\n");
    push(&v2, "v2.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap();
    assert_eq!(live.current().await.sources.len(), 1, "within the cache: the running version");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live.current().await.sources.len(), 2, "after the cache: version 2");
    assert_eq!(live.version().await, 2);

    // A version that cannot be used any more (its secret was deleted after the push) never
    // replaces a working one.
    let param3 = format!("{}lab-key", a.prefix);
    a.ssm.put(&param3, "lab-key-0123456789").await.unwrap();
    let v3 = format!("{v1}[[sources]]\nid = \"lab\"\nkind = \"particle\"\ntoken = \"${{ssm:{param3}}}\"\n");
    push(&v3, "v3.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap();
    a.client.delete_parameter().name(&param3).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((live.current().await.sources.len(), live.version().await), (2, 2), "kept version 2");
}

#[tokio::test]
async fn a_cold_start_with_a_missing_secret_fails_naming_it_and_with_nothing_pushed_runs_empty() {
    let Some(a) = aws().await else { return };
    let live = LiveConfig::load(a.repo.clone(), a.ssm.clone(), Duration::from_secs(60)).await.unwrap();
    assert!(live.current().await.sources.is_empty());
    assert_eq!(live.version().await, 0);

    let param = format!("{}particle-key", a.prefix);
    a.ssm.put(&param, "particle-key-0123456789").await.unwrap();
    push(&a.file(&format!("${{ssm:{param}}}")), "v1.toml", &a.repo, &a.ssm, &no_env, &a.options(false)).await.unwrap();
    a.client.delete_parameter().name(&param).send().await.unwrap();
    let err = LiveConfig::load(a.repo.clone(), a.ssm.clone(), Duration::from_secs(60)).await.err().unwrap();
    assert!(err.to_string().contains(&param), "{err}");
}

#[tokio::test]
async fn simultaneous_pushes_never_lose_a_version() {
    let Some(a) = aws().await else { return };
    let param = format!("{}particle-key", a.prefix);
    a.ssm.put(&param, "particle-key-0123456789").await.unwrap();
    let text = Arc::new(a.file(&format!("${{ssm:{param}}}")));
    let (repo, ssm, options) = (a.repo.clone(), a.ssm.clone(), a.options(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (repo, ssm, options, text) = (repo.clone(), ssm.clone(), options.clone(), text.clone());
            tokio::spawn(async move { push(&text, "k.toml", &repo, &ssm, &no_env, &options).await.map(|d| d.version) })
        })
        .collect();
    let mut versions: Vec<u64> = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => versions.push(v),
            Err(e) => assert!(e.to_string().contains("someone else was first"), "{e}"),
        }
    }
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=versions.len() as u64).collect();
    assert_eq!(versions, expected, "each winner got its own version");
}
