//! A small client of the management API: JSON in and out, Basic credentials, Harbor's
//! error envelope turned into a readable error.

use anyhow::{bail, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the API is and who calls it.
pub struct Api {
    http: reqwest::Client,
    base: String,
    username: Option<String>,
    password: Option<String>,
}

/// A response: its JSON (`Null` when empty), `X-Total-Count` and `Location`.
pub struct Reply {
    pub body: Value,
    pub total: Option<u64>,
    pub location: Option<String>,
}

/// Encode one path segment (a project, a repository name...).
pub fn seg(s: &str) -> String {
    percent_encode(s)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Reply {
    /// The path below `/api/v2.0` of the `Location` a create answered with; `what` names
    /// what was created, for the error.
    pub fn created_path(&self, what: &str) -> anyhow::Result<String> {
        let location = self
            .location
            .as_deref()
            .with_context(|| format!("the server did not say where the {what} is (no Location)"))?;
        Ok(location
            .split_once("/api/v2.0")
            .map_or(location, |(_, p)| p)
            .to_owned())
    }
}

impl Api {
    pub fn new(
        url: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: format!("{}/api/v2.0", url.trim_end_matches('/')),
            username,
            password,
        })
    }

    /// Send a request to `path` (below `/api/v2.0`) with query pairs and an optional body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("x-is-resource-name", "true")
            .query(query);
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_deref());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let total = resp
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["errors"][0]["message"]
                .as_str()
                .map_or_else(|| text.trim().to_owned(), str::to_owned);
            let hint = if status == StatusCode::UNAUTHORIZED && self.username.is_none() {
                " (set --username/--password or BERTH_USERNAME/BERTH_PASSWORD)"
            } else {
                ""
            };
            bail!("{method} {path}: {status}: {message}{hint}");
        }
        Ok(Reply {
            body,
            total,
            location,
        })
    }

    /// The raw text of a `GET` (for plain-text endpoints such as a GC log).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_deref());
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", text.trim());
        }
        Ok(text)
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, query, None).await
    }

    /// Every page of a listing.
    pub async fn get_all(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1.. {
            let mut q = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("page_size", "100".to_owned()));
            let r = self.get(path, &q).await?;
            let items = r.body.as_array().cloned().unwrap_or_default();
            let done = items.len() < 100
                || r.total
                    .is_some_and(|t| (out.len() + items.len()) as u64 >= t);
            out.extend(items);
            if done {
                break;
            }
        }
        Ok(out)
    }
}
