//! The sandbox payment gateway as a real process (`shoal gateway-sandbox`) beside a test
//! cluster: started on its own free port, killed on drop, with helpers for its charges and
//! refunds lists, faults and stats (the control endpoints take the same API key).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::harness::{ClusterSpec, free_port, plain_client, wait_for};

/// The API key test sandboxes take.
pub const API_KEY: &str = "sk_test_cluster";
/// The webhook secret test sandboxes sign with (and test nodes verify with).
pub const WEBHOOK_SECRET: &str = "whsec_cluster_test";

/// A running sandbox gateway.
pub struct Sandbox {
    /// Its base URL.
    pub url: String,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
    client: reqwest::Client,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for a sandbox, and `spec` with the nodes pointed at it (`payments.*`).
pub fn spec_with_gateway(spec: ClusterSpec) -> Result<(u16, ClusterSpec)> {
    let port = free_port()?;
    let spec = spec
        .set("payments", &format!("gateway_url = \"http://127.0.0.1:{port}\""))
        .set("payments", &format!("gateway_key = \"{API_KEY}\""))
        .set("payments", &format!("webhook_secret = \"{WEBHOOK_SECRET}\""));
    Ok((port, spec))
}

impl Sandbox {
    /// Starts `bin gateway-sandbox` on `port`, logging into `dir`, sending webhooks to
    /// `webhook_url` if given; waits until it answers.
    pub async fn start(bin: &Path, dir: &Path, port: u16, latency_ms: u64, webhook_url: Option<&str>) -> Result<Self> {
        let log = dir.join("logs").join("sandbox.log");
        std::fs::create_dir_all(dir.join("logs"))?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut command = Command::new(bin);
        command.args(["gateway-sandbox", "--listen", &format!("127.0.0.1:{port}")]).args([
            "--latency-ms",
            &latency_ms.to_string(),
            "--api-key",
            API_KEY,
        ]);
        if let Some(url) = webhook_url {
            command.args(["--webhook-url", url, "--webhook-secret", WEBHOOK_SECRET]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting the sandbox gateway")?;
        let sandbox = Self { url: format!("http://127.0.0.1:{port}"), log, child, client: plain_client()? };
        let probe = format!("{}/_sandbox/faults", sandbox.url);
        wait_for("the sandbox gateway to answer", Duration::from_secs(20), || {
            let request = sandbox.client.get(&probe).bearer_auth(API_KEY).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await?;
        Ok(sandbox)
    }

    /// Every charge it made, newest first (all pages of `GET /v1/charges`).
    pub async fn charges(&self) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/charges?limit=100", self.url);
            if let Some(a) = &after {
                url.push_str(&format!("&starting_after={a}"));
            }
            let r = self.client.get(url).bearer_auth(API_KEY).send().await?;
            ensure!(r.status().is_success(), "GET /v1/charges answered {}", r.status());
            let page: Value = r.json().await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data.last().and_then(|c| c["id"].as_str()).map(str::to_owned);
            all.extend(data);
            if page["has_more"] != true || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// The charges that succeeded.
    pub async fn succeeded_charges(&self) -> Result<Vec<Value>> {
        Ok(self.charges().await?.into_iter().filter(|c| c["status"] == "succeeded").collect())
    }

    /// The refunds of one PaymentIntent (first page of `GET /v1/refunds`, newest first).
    pub async fn refunds_of_intent(&self, payment_intent: &str) -> Result<Vec<Value>> {
        let url = format!("{}/v1/refunds", self.url);
        let r = self.client.get(url).query(&[("payment_intent", payment_intent)]).bearer_auth(API_KEY).send().await?;
        ensure!(r.status().is_success(), "GET /v1/refunds answered {}", r.status());
        let page: Value = r.json().await?;
        Ok(page["data"].as_array().cloned().unwrap_or_default())
    }

    /// A control request without the API key: its status (the control endpoints want the key).
    pub async fn control_status_without_key(&self, path: &str) -> Result<u16> {
        Ok(self.client.get(format!("{}{path}", self.url)).send().await?.status().as_u16())
    }

    /// Replaces its faults (`POST /_sandbox/faults`).
    pub async fn set_faults(&self, faults: Value) -> Result<()> {
        let r =
            self.client.post(format!("{}/_sandbox/faults", self.url)).bearer_auth(API_KEY).json(&faults).send().await?;
        if !r.status().is_success() {
            bail!("POST /_sandbox/faults answered {}", r.status());
        }
        Ok(())
    }

    /// Its counters (`GET /_sandbox/stats`).
    pub async fn stats(&self) -> Result<Value> {
        let r = self.client.get(format!("{}/_sandbox/stats", self.url)).bearer_auth(API_KEY).send().await?;
        ensure!(r.status().is_success(), "GET /_sandbox/stats answered {}", r.status());
        Ok(r.json().await?)
    }

    /// Sends a stored event again; answers the endpoint's status.
    pub async fn resend(&self, event_id: &str) -> Result<u16> {
        let url = format!("{}/_sandbox/events/{event_id}/resend", self.url);
        let r = self.client.post(url).bearer_auth(API_KEY).send().await?;
        let v: Value = r.json().await?;
        v["endpoint_status"].as_u64().map(|s| s as u16).context("no endpoint_status")
    }

    /// An event it sent (`GET /v1/events/{id}`).
    pub async fn event(&self, id: &str) -> Result<Value> {
        Ok(self.client.get(format!("{}/v1/events/{id}", self.url)).bearer_auth(API_KEY).send().await?.json().await?)
    }

    /// A PaymentIntent found by Shoal's payment id.
    pub async fn intent_of(&self, payment_id: &str) -> Result<Option<Value>> {
        let query = format!("metadata['shoal_payment_id']:'{payment_id}'");
        let r = self
            .client
            .get(format!("{}/v1/payment_intents/search", self.url))
            .query(&[("query", query)])
            .bearer_auth(API_KEY)
            .send()
            .await?;
        let v: Value = r.json().await?;
        Ok(v["data"].as_array().and_then(|d| d.first()).cloned())
    }
}
