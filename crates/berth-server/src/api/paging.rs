//! Harbor's paging (`page`, `page_size`, `X-Total-Count`, `Link`) and its query language
//! (`q=k1=v1,k2=~v2,k3=[min~max]`).

use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_meta::{Listing, Paging};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::error::HarborError;

/// Default page size, as Harbor's.
const DEFAULT_PAGE_SIZE: u64 = 10;
/// Largest page size, as Harbor's.
const MAX_PAGE_SIZE: u64 = 100;

/// `page` and `page_size`.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page number, from 1.
    pub page: Option<u64>,
    /// Entries per page (default 10, at most 100).
    pub page_size: Option<u64>,
}

/// A validated page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    number: u64,
    size: u64,
}

impl PageQuery {
    /// The page asked for.
    pub fn page(self) -> Result<Page, HarborError> {
        let number = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if number == 0 {
            return Err(HarborError::bad_request("page starts at 1"));
        }
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(HarborError::bad_request(format!(
                "page_size must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Ok(Page { number, size })
    }
}

impl Page {
    /// The store's window for it.
    pub fn paging(self) -> Paging {
        Paging {
            offset: (self.number - 1).saturating_mul(self.size),
            limit: self.size,
        }
    }
}

/// The URL of page `n`: the request's, with `page` and `page_size` replaced.
fn page_url(uri: &Uri, page: u64, size: u64) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if k != "page" && k != "page_size" {
            query.append_pair(&k, &v);
        }
    }
    query.append_pair("page", &page.to_string());
    query.append_pair("page_size", &size.to_string());
    format!("{}?{}", uri.path(), query.finish())
}

/// A page of a listing as Harbor sends it: the JSON array, `X-Total-Count`, and a `Link`
/// header with `rel="prev"` and `rel="next"` where there are such pages.
pub fn paged<T: Serialize>(uri: &Uri, page: Page, total: u64, items: Vec<T>) -> Response {
    let mut links = Vec::new();
    if page.number > 1 {
        let prev = page.number - 1;
        links.push(format!(
            "<{}>; rel=\"prev\"",
            page_url(uri, prev, page.size)
        ));
    }
    if page.number.saturating_mul(page.size) < total {
        let next = page.number + 1;
        links.push(format!(
            "<{}>; rel=\"next\"",
            page_url(uri, next, page.size)
        ));
    }
    let mut resp = Json(items).into_response();
    let headers = resp.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    if let Ok(v) = HeaderValue::from_str(&links.join(" , ")) {
        if !links.is_empty() {
            headers.insert("link", v);
        }
    }
    resp
}

/// A listing mapped through `f` and paged.
pub fn paged_listing<T, U: Serialize>(
    uri: &Uri,
    page: Page,
    listing: Listing<T>,
    f: impl FnMut(T) -> U,
) -> Response {
    let items = listing.items.into_iter().map(f).collect();
    paged(uri, page, listing.total, items)
}

/// One condition of a `q` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `k=v`.
    Exact(String),
    /// `k=~v`.
    Fuzzy(String),
    /// `k=[min~max]` (either end may be empty).
    Range(Option<String>, Option<String>),
}

impl Cond {
    /// The value of an exact or fuzzy condition.
    pub fn value(&self) -> Option<&str> {
        match self {
            Cond::Exact(v) | Cond::Fuzzy(v) => Some(v),
            Cond::Range(..) => None,
        }
    }
}

fn unquote(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| t.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(t)
        .to_owned()
}

/// Parse Harbor's `q`: conditions separated by `,` (a `,` inside `[...]` or `{...}` does
/// not separate). Lists (`{a b}`, `(a b)`) are not supported.
pub fn parse_q(q: Option<&str>) -> Result<Vec<(String, Cond)>, HarborError> {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in q.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&q[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&q[start..]);
    let mut out = Vec::new();
    for part in parts.into_iter().filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| HarborError::bad_request(format!("bad query condition {part:?}")))?;
        let cond = if let Some(f) = v.strip_prefix('~') {
            Cond::Fuzzy(unquote(f))
        } else if let Some(r) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let (a, b) = r
                .split_once('~')
                .ok_or_else(|| HarborError::bad_request(format!("bad range {v:?}")))?;
            let end = |s: &str| Some(unquote(s)).filter(|s| !s.is_empty());
            Cond::Range(end(a), end(b))
        } else if v.starts_with('{') || v.starts_with('(') {
            return Err(HarborError::bad_request(
                "list conditions in q are not supported",
            ));
        } else {
            Cond::Exact(unquote(v))
        };
        out.push((k.trim().to_owned(), cond));
    }
    Ok(out)
}

/// The condition on `key` (keys compared without case, as Harbor's `Level`, `ProjectID`).
pub fn cond<'a>(conds: &'a [(String, Cond)], key: &str) -> Option<&'a Cond> {
    conds
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_conditions() {
        let q = parse_q(Some("username=~ali,op_time=[2020-01-01 00:00:00~2021-01-01 00:00:00],Level=project,ProjectID=3"))
            .expect("parses");
        assert_eq!(cond(&q, "username"), Some(&Cond::Fuzzy("ali".into())));
        assert_eq!(
            cond(&q, "op_time"),
            Some(&Cond::Range(
                Some("2020-01-01 00:00:00".into()),
                Some("2021-01-01 00:00:00".into())
            ))
        );
        assert_eq!(cond(&q, "level"), Some(&Cond::Exact("project".into())));
        assert!(parse_q(Some("nonsense")).is_err());
        assert!(parse_q(None).expect("empty").is_empty());
    }

    #[test]
    fn links() {
        let uri: Uri = "/api/v2.0/projects?name=x&page=2&page_size=1"
            .parse()
            .expect("uri");
        let page = PageQuery {
            page: Some(2),
            page_size: Some(1),
        }
        .page()
        .expect("valid");
        let resp = paged(&uri, page, 3, vec![1]);
        let link = resp.headers()["link"].to_str().expect("ascii");
        assert!(link.contains("</api/v2.0/projects?name=x&page=1&page_size=1>; rel=\"prev\""));
        assert!(link.contains("page=3&page_size=1>; rel=\"next\""));
        assert_eq!(resp.headers()["x-total-count"], "3");
    }
}
