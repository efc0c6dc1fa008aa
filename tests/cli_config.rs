//! The real binary against config files: every validation error exits 2 and names the key;
//! `check-config` never shows a secret; `status` works on an empty or absent store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

const SECRET: &str = "s3cr3t-token-value-123";

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn bin() -> Command {
    let mut cmd = Command::cargo_bin("contact-sync").unwrap();
    cmd.env_remove("CONTACT_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .env("TEST_TOKEN", SECRET);
    cmd
}

fn store_line(dir: &Path) -> String {
    format!(
        "[store]\npath = \"{}\"\n",
        dir.join("contacts.db").display()
    )
}

const CHATWOOT: &str = r#"
[[providers]]
name = "support"
kind = "chatwoot"
base_url = "https://chat.example.com"
account_id = 3
api_key_env = "TEST_TOKEN"
"#;

/// Runs check-config on `body` (after a [store] table) and expects exit 2 with `key` and
/// `message` in stderr, and no store file created.
fn expect_invalid(body: &str, key: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{}{body}", store_line(dir.path())));
    bin()
        .args(["check-config", "--config"])
        .arg(&config)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(key).and(predicate::str::contains(message)));
    assert!(
        !dir.path().join("contacts.db").exists(),
        "no store may be created"
    );
}

#[test]
fn unknown_kind_is_named() {
    expect_invalid(
        "[[providers]]\nname = \"x\"\nkind = \"hubspot\"\napi_key_env = \"TEST_TOKEN\"\n",
        "providers[x].kind",
        "unknown kind `hubspot`",
    );
}

#[test]
fn duplicate_name_is_named() {
    expect_invalid(
        &format!("{CHATWOOT}{CHATWOOT}"),
        "providers[support].name",
        "duplicate provider name `support`",
    );
}

#[test]
fn unset_secret_env_is_named() {
    expect_invalid(
        "[[providers]]\nname = \"bot\"\nkind = \"agentalk\"\napi_key_env = \"NO_SUCH_VAR_FOR_TEST\"\n",
        "providers[bot].api_key_env",
        "`NO_SUCH_VAR_FOR_TEST` is not set",
    );
}

#[test]
fn unreadable_secret_file_is_named() {
    expect_invalid(
        "[[providers]]\nname = \"bot\"\nkind = \"agentalk\"\napi_key_file = \"/nonexistent/key\"\n",
        "providers[bot].api_key_file",
        "cannot read /nonexistent/key",
    );
}

#[test]
fn missing_secret_is_named() {
    expect_invalid(
        "[[providers]]\nname = \"bot\"\nkind = \"dmchamp\"\n",
        "providers[bot].api_key_env",
        "no API key",
    );
}

#[test]
fn bad_cron_is_named() {
    expect_invalid(
        &format!("[sync]\nschedule = \"every five minutes\"\n{CHATWOOT}"),
        "sync.schedule",
        "fields",
    );
    expect_invalid(
        &format!("[sync]\nschedule = \"0 99 * * * *\"\n{CHATWOOT}"),
        "sync.schedule",
        "not a valid cron expression",
    );
}

#[test]
fn plain_http_to_remote_host_is_refused() {
    expect_invalid(
        "[[providers]]\nname = \"support\"\nkind = \"chatwoot\"\nbase_url = \"http://chat.example.com\"\naccount_id = 1\napi_key_env = \"TEST_TOKEN\"\n",
        "providers[support].base_url",
        "allow_insecure_http",
    );
}

#[test]
fn chatwoot_needs_account_id() {
    expect_invalid(
        "[[providers]]\nname = \"support\"\nkind = \"chatwoot\"\nbase_url = \"https://c.example.com\"\napi_key_env = \"TEST_TOKEN\"\n",
        "providers[support].account_id",
        "required for chatwoot",
    );
}

#[test]
fn maiagent_push_needs_inbox_id() {
    expect_invalid(
        "[[providers]]\nname = \"bot\"\nkind = \"maiagent\"\napi_key_env = \"TEST_TOKEN\"\n",
        "providers[bot].inbox_id",
        "required for maiagent",
    );
}

#[test]
fn unknown_key_gets_a_suggestion() {
    expect_invalid(
        &format!("[sync]\nscheduel = \"0 * * * * *\"\n{CHATWOOT}"),
        "sync.scheduel",
        "unknown key `scheduel`, did you mean `schedule`?",
    );
    expect_invalid(
        &CHATWOOT.replace("account_id", "acount_id"),
        "providers[support].acount_id",
        "did you mean `account_id`?",
    );
}

#[test]
fn missing_config_file_exits_2() {
    bin()
        .args(["check-config", "--config", "/nonexistent/contact-sync.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("does not exist"));
}

#[test]
fn check_config_prints_effective_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let body = format!(
        "{}{CHATWOOT}\n[[providers]]\nname = \"bot\"\nkind = \"dmchamp\"\napi_key_file = \"{}\"\n\n[[providers]]\nname = \"lit\"\nkind = \"agentalk\"\napi_key = \"{SECRET}\"\n",
        store_line(dir.path()),
        key_file.display()
    );
    let config = write_config(dir.path(), &body);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    assert!(stdout.contains("api_key = \"***\""), "{stdout}");
    assert!(
        stdout.contains("base_url = \"https://api.dmchamp.com\""),
        "{stdout}"
    );
    assert!(stdout.contains("schedule = \"0 */5 * * * *\""), "{stdout}");
    assert!(
        stderr.contains("literal api_key"),
        "warns about the literal key: {stderr}"
    );
}

#[test]
fn env_overrides_file_and_digit_only_values_stay_strings() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}[[providers]]\nname = \"bot\"\nkind = \"maiagent\"\ninbox_id = \"abc\"\napi_key_env = \"DIGITS_TOKEN\"\n",
        store_line(dir.path())
    );
    let config = write_config(dir.path(), &body);
    let other_store = dir.path().join("other.db");
    bin()
        .args(["check-config", "--config"])
        .arg(&config)
        .env("DIGITS_TOKEN", "123456")
        .env("CONTACT_SYNC_STORE__PATH", &other_store)
        .env("CONTACT_SYNC_SYNC__DEFAULT_REGION", "gb")
        .assert()
        .code(0)
        .stdout(
            predicate::str::contains(other_store.display().to_string())
                .and(predicate::str::contains("default_region = \"GB\""))
                .and(predicate::str::contains("123456").not()),
        );
}

#[test]
fn config_env_var_is_used_when_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{}{CHATWOOT}", store_line(dir.path())));
    bin()
        .arg("check-config")
        .env("CONTACT_SYNC_CONFIG", &config)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("chat.example.com"));
}

#[test]
fn status_on_absent_store_prints_zeros_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{}{CHATWOOT}", store_line(dir.path())));
    let out = bin()
        .args(["status", "--json", "--config"])
        .arg(&config)
        .env_remove("TEST_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["contacts"], 0);
    assert_eq!(v["pending"], 0);
    assert_eq!(v["dead"], 0);
    assert_eq!(v["conflicts"], 0);
    assert_eq!(v["providers"][0]["name"], "support");
    assert_eq!(v["providers"][0]["kind"], "chatwoot");
    assert_eq!(v["providers"][0]["linked"], 0);
    assert!(v["providers"][0]["last_run"].is_null());
    assert!(
        !dir.path().join("contacts.db").exists(),
        "status never creates a store"
    );
}

#[test]
fn dry_run_requires_sync_now() {
    bin().arg("--dry-run").assert().code(2);
}

#[test]
fn example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    bin()
        .args(["check-config", "--config"])
        .arg(&example)
        .env("CHATWOOT_TOKEN", SECRET)
        .env("CHATWOOT_WEBHOOK_SECRET", SECRET)
        .env("MAIAGENT_API_KEY", SECRET)
        .env("AGENTALK_TOKEN", SECRET)
        .env("DMCHAMP_API_KEY", SECRET)
        .assert()
        .code(0)
        .stdout(
            predicate::str::contains("name = \"campaigns\"")
                .and(predicate::str::contains(SECRET).not()),
        );
}

#[test]
fn webhook_keys_are_checked() {
    // A secret needs the endpoint the events arrive at: both keys are named.
    expect_invalid(
        &format!("{CHATWOOT}webhook_secret_env = \"TEST_TOKEN\"\n"),
        "providers[support].webhook_secret_env",
        "`http.listen` is not set",
    );
    let listen = "[http]\nlisten = \"127.0.0.1:9477\"\n";
    expect_invalid(
        &format!("{listen}{CHATWOOT}webhook_secret_env = \"NO_SUCH_VARIABLE_HERE\"\n"),
        "providers[support].webhook_secret_env",
        "NO_SUCH_VARIABLE_HERE` is not set",
    );
    expect_invalid(
        &format!(
            "{listen}{CHATWOOT}webhook_secret_env = \"TEST_TOKEN\"\nwebhook_allow_unsigned = true\n"
        ),
        "providers[support].webhook_allow_unsigned",
        "accepts signed events only",
    );
    expect_invalid(
        &format!("{listen}{CHATWOOT}webhook_allow_unsigned = \"maybe\"\n"),
        "providers[support].webhook_allow_unsigned",
        "is not true or false",
    );
    expect_invalid(
        "[http]\nlisten = \"127.0.0.1:9477\"\n[[providers]]\nname = \"a\"\nkind = \"agentalk\"\napi_key_env = \"TEST_TOKEN\"\nwebhook_secret_env = \"TEST_TOKEN\"\n",
        "providers[a].webhook_secret_env",
        "is a setting of chatwoot providers",
    );
    // Valid: the secret is shown as ***, never in clear.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}{listen}{CHATWOOT}webhook_secret_env = \"TEST_TOKEN\"\n",
            store_line(dir.path())
        ),
    );
    bin()
        .args(["check-config", "--config"])
        .arg(&config)
        .assert()
        .code(0)
        .stdout(
            predicate::str::contains("webhook_secret = \"***\"")
                .and(predicate::str::contains(SECRET).not()),
        );
}
