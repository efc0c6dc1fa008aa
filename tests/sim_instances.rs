//! Several instances of one simulated platform in one world: two Chatwoot accounts
//! (`support`, `sales`) and a MaiAgent workspace, each its own server with its own
//! credentials and people, and a config the binary accepts. Sync behaviour across the two
//! accounts is tested elsewhere; this only shows the fixture stands up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{World, stdout, text};
use contact_sync::simulator::InstanceSpec;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chatwoot_accounts_and_maiagent_start_and_answer() {
    let world = World::with_instances(
        60,
        &[
            InstanceSpec::new("support", "chatwoot", 0),
            InstanceSpec::new("sales", "chatwoot", 1),
            InstanceSpec::new("sales-bot", "maiagent", 0),
        ],
    )
    .await;

    // The config names the three instances and the binary accepts it (keys from the env).
    let out = world.run(&["check-config"]).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = stdout(&out);
    for name in ["support", "sales", "sales-bot"] {
        assert!(shown.contains(&format!("name = \"{name}\"")), "{shown}");
    }
    assert_eq!(shown.matches("kind = \"chatwoot\"").count(), 2, "{shown}");

    // Two accounts: different servers, account ids and tokens.
    let support = world.instance("support").info();
    let sales = world.instance("sales").info();
    assert_ne!(support["base_url"], sales["base_url"]);
    assert_ne!(support["account_id"], sales["account_id"]);
    assert_ne!(support["api_key"], sales["api_key"]);

    // Each answers its own account with its own token, and refuses the other's token.
    let http = reqwest::Client::builder().build().unwrap();
    let mut emails: Vec<BTreeSet<String>> = Vec::new();
    for (own, other) in [(&support, &sales), (&sales, &support)] {
        let url = format!(
            "{}/api/v1/accounts/{}/contacts",
            own["base_url"].as_str().unwrap(),
            own["account_id"]
        );
        let r = http
            .get(&url)
            .header("api_access_token", own["api_key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let body: Value = r.json().await.unwrap();
        assert!(body["meta"]["count"].as_u64().unwrap() > 0, "{body}");
        let r = http
            .get(&url)
            .header("api_access_token", other["api_key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url}");
        let dump = world
            .sim
            .instance(if own == &support { "support" } else { "sales" })
            .unwrap()
            .dump();
        emails.push(
            common::contacts(&dump)
                .iter()
                .map(|c| text(c, "email"))
                .filter(|e| !e.is_empty())
                .collect(),
        );
    }
    // Each account holds its own share of the population, overlapping the other's.
    assert_ne!(emails[0], emails[1]);
    assert!(emails[0].intersection(&emails[1]).next().is_some());

    // The MaiAgent workspace is up and seeded too.
    let mai = world.instance("sales-bot");
    assert!(mai.contact_count() > 0);
    let info = mai.info();
    let r = http
        .get(format!(
            "{}/api/contacts/",
            info["base_url"].as_str().unwrap()
        ))
        .header(
            "Authorization",
            format!("Api-Key {}", info["api_key"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // `simulate`'s object only describes instance 0 of each kind.
    let sim_info = world.sim.info();
    assert_eq!(sim_info["chatwoot"], support);
    assert!(sim_info.get("agentalk").is_none());
}
