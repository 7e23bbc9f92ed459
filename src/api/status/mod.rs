//! The public status page and badges (`[status_page]`), served by the API
//! role without a token:
//!
//! * `GET /status`: server-rendered HTML (readable without JavaScript;
//!   `app.js` only localises times, makes the charts tabs and reloads),
//!   `GET /status.json`: the same data.
//! * `GET /status/sites/{name}` (and `{name}.json`): one site's uptime
//!   windows, 90-day bars, p50/p95 response-time charts (24 h, 7 d) and
//!   incidents.
//! * `GET /badges/{name}/status.svg`, `uptime/{24h,7d,30d,1y}.svg`,
//!   `response-time/{24h,7d}.svg`, each also as `.json` (a Shields.io
//!   endpoint).
//!
//! Only listed sites exist here: any other name is `404`, the same answer
//! as a name that is not configured at all. Of a site the page shows its
//! name, display name and, with `show_urls`, its URL; incidents show the
//! kind of failure, never its message. Answers are cached for `refresh`
//! (see [`cache`]; a stale one is sent with its `Age` and what is left
//! of `max-age`), gzip-compressed once, validated by `ETag`, and carry a
//! strict Content Security Policy: the page loads nothing but its own CSS
//! and script.

pub mod badges;
mod cache;
mod chart;
pub mod data;
pub mod detail;
mod page;
mod respond;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::config::{Listed, Site, SiteList, StatusPage};
use respond::{Body, Form};

/// Postgres gets this long to answer one page's queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no Postgres connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("query failed: {}", crate::checker::error_chain(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("rendering failed: {0}")]
    Render(#[from] minijinja::Error),
    #[error("Postgres did not answer within {QUERY_TIMEOUT:?}")]
    Timeout,
}

/// One answer in both its forms: HTML or SVG, and JSON.
pub struct Pair {
    main: Body,
    json: Body,
    /// When it was rendered: its age is sent (`Age`) and taken off
    /// `max-age`, so a stale answer is not cached downstream as fresh.
    rendered: tokio::time::Instant,
}

impl Pair {
    fn new(main: Body, json: Body) -> Pair {
        Pair {
            main,
            json,
            rendered: tokio::time::Instant::now(),
        }
    }
}

/// The status page service; cheap to clone.
#[derive(Clone)]
pub struct StatusPages {
    inner: Arc<Inner>,
}

struct Inner {
    /// `[status_page]` as the daemon last loaded it (reloads included).
    page: watch::Receiver<Arc<StatusPage>>,
    /// The settings and sites the caches were made under: when either
    /// moves on (a reload), the caches are emptied before anything is
    /// served (a site's new maintenance window shows at once).
    seen: std::sync::Mutex<Seen>,
    pool: Pool,
    sites: watch::Receiver<SiteList>,
    templates: page::Templates,
    cache: cache::Cache<Pair>,
    /// Each site's view rows, shared by its page and its six badges (one
    /// query over a week of raw rows per site and refresh, not seven).
    windows: cache::Cache<Vec<detail::Window>>,
    history: data::History,
}

impl StatusPages {
    /// `page` and `sites` follow config reloads: a changed title, group
    /// or listed site is served from the next request on.
    pub fn new(
        page: watch::Receiver<Arc<StatusPage>>,
        pool: Pool,
        sites: watch::Receiver<SiteList>,
    ) -> Self {
        let seen = Seen::new(page.borrow().clone(), sites.borrow().clone());
        let cache = cache::Cache::new(seen.page.refresh);
        let windows = cache::Cache::new(seen.page.refresh);
        StatusPages {
            inner: Arc::new(Inner {
                page,
                seen: std::sync::Mutex::new(seen),
                pool,
                sites,
                templates: page::Templates::default(),
                cache,
                windows,
                history: data::History::default(),
            }),
        }
    }

    /// The routes, public (no token).
    pub fn router(self) -> Router {
        Router::new()
            .route("/status", get(overview_html))
            .route("/status.json", get(overview_json))
            .route(
                "/status/app.css",
                get(|h: HeaderMap| async move { respond::asset(Form::Css, &h) }),
            )
            .route(
                "/status/app.js",
                get(|h: HeaderMap| async move { respond::asset(Form::Js, &h) }),
            )
            .route("/status/sites/{page}", get(site_page))
            .route("/badges/{site}/{*rest}", get(badge))
            .with_state(self)
    }

    /// The page's settings now; answers cached under older ones, or under
    /// an older site list, are dropped first.
    fn page(&self) -> Arc<StatusPage> {
        let now = self.inner.page.borrow().clone();
        let sites = self.inner.sites.borrow().clone();
        let mut seen = self.inner.seen.lock().expect("status page lock");
        if !Arc::ptr_eq(&seen.page, &now) || !Arc::ptr_eq(&seen.sites, &sites) {
            let next = Seen::new(now.clone(), sites);
            // Every reload sends a new site list: only a change to what
            // the page shows empties the caches (a reload during a
            // Postgres outage turned the page into 503s).
            if next.page != seen.page || next.listed != seen.listed {
                self.inner.cache.reset(now.refresh);
                self.inner.windows.reset(now.refresh);
            }
            *seen = next;
        }
        now
    }

    fn max_age(&self) -> u64 {
        self.page().refresh.as_secs()
    }

    /// The listed site called `name` and its config, if both exist.
    fn listed(&self, name: &str) -> Option<(Listed, Arc<Site>)> {
        let listed = self.page().listed().find(|l| l.site == name)?.clone();
        let site = self
            .inner
            .sites
            .borrow()
            .iter()
            .find(|s| s.name == name)?
            .clone();
        Some((listed, site))
    }

    async fn overview(&self) -> Result<Arc<Pair>, StatusError> {
        self.page();
        let me = self.clone();
        self.inner
            .cache
            .get("overview", move || async move {
                let started = std::time::Instant::now();
                let list = me.inner.sites.borrow().clone();
                let by_name: HashMap<&str, &Site> =
                    list.iter().map(|s| (s.name.as_str(), s.as_ref())).collect();
                let mut db = within(me.inner.pool.get()).await?;
                let tx = within(snapshot(&mut db)).await?;
                let db: &tokio_postgres::Transaction = &tx;
                let history = Some(&me.inner.history);
                let now = Utc::now();
                let page = me.page();
                let o = within(data::overview(db, &page, &by_name, now, history)).await?;
                let html = me.inner.templates.overview(&o, me.max_age())?;
                let pair = Pair::new(Body::new(html.into_bytes()), Body::json(&o));
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    bytes = pair.main.len(),
                    "status page rendered"
                );
                Ok(pair)
            })
            .await
    }

    async fn site(&self, listed: Listed, site: Arc<Site>) -> Result<Arc<Pair>, StatusError> {
        let me = self.clone();
        self.inner
            .cache
            .get(&format!("site/{}", site.name), move || async move {
                let mut db = within(me.inner.pool.get()).await?;
                let tx = within(snapshot(&mut db)).await?;
                let db: &tokio_postgres::Transaction = &tx;
                let page = &me.page();
                // Read afresh with the rest, not from the badges' cache: a
                // window kept from an earlier render sat beside newer
                // totals (`checks` 6 on a day of 5).
                let windows = within(detail::windows(db, &site.name)).await?;
                let windows = me.inner.windows.put(&site.name, windows);
                let now = Utc::now();
                let d = within(detail::detail(db, page, &listed, &site, &windows, now)).await?;
                let html = me.inner.templates.site(&d, me.max_age())?;
                Ok(Pair::new(Body::new(html.into_bytes()), Body::json(&d)))
            })
            .await
    }

    /// The site's rows of `site_uptime` and `site_uptime_long`.
    async fn windows(&self, site: &str) -> Result<Arc<Vec<detail::Window>>, StatusError> {
        let (pool, name) = (self.inner.pool.clone(), site.to_owned());
        self.inner
            .windows
            .get(site, move || async move {
                let mut db = within(pool.get()).await?;
                let tx = within(snapshot(&mut db)).await?;
                let db: &tokio_postgres::Transaction = &tx;
                within(detail::windows(db, &name)).await
            })
            .await
    }

    async fn badge(
        &self,
        listed: Listed,
        site: Arc<Site>,
        kind: badges::Kind,
        key: String,
    ) -> Result<Arc<Pair>, StatusError> {
        let me = self.clone();
        self.inner
            .cache
            .get(&key, move || async move {
                let face = match kind {
                    badges::Kind::Status => {
                        let mut db = within(me.inner.pool.get()).await?;
                        let tx = within(snapshot(&mut db)).await?;
                        let db: &tokio_postgres::Transaction = &tx;
                        let now = Utc::now();
                        let page = me.page();
                        let s = detail::status_now(db, &page, &listed, &site, now);
                        badges::status(within(s).await?)
                    }
                    badges::Kind::Uptime(span) | badges::Kind::ResponseTime(span) => {
                        let rows = me.windows(&site.name).await?;
                        let row = rows.iter().find(|w| w.window == span.view_window());
                        badges::window(kind, row)
                    }
                };
                Ok(Pair::new(
                    Body::new(face.svg().into_bytes()),
                    Body::json(&face.shields(me.max_age())),
                ))
            })
            .await
    }
}

/// Runs a render's Postgres work (the pool's connection included: a server
/// that accepts and never answers must not hold readers) within
/// [`QUERY_TIMEOUT`].
async fn within<T, E: Into<StatusError>>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StatusError> {
    tokio::time::timeout(QUERY_TIMEOUT, f)
        .await
        .map_err(|_| StatusError::Timeout)?
        .map_err(Into::into)
}

/// The settings the caches were made under.
struct Seen {
    page: Arc<StatusPage>,
    sites: SiteList,
    /// The listed sites' configs, as compared (debug forms: a site has no
    /// `PartialEq`, and its secrets print redacted, which the page never
    /// shows anyway).
    listed: Vec<String>,
}

impl Seen {
    fn new(page: Arc<StatusPage>, sites: SiteList) -> Seen {
        let by_name: HashMap<&str, &Site> = sites.iter().map(|s| (s.name.as_str(), &**s)).collect();
        let listed = (page.listed())
            .map(|l| format!("{:?}", by_name.get(l.site.as_str())))
            .collect();
        Seen {
            page,
            sites,
            listed,
        }
    }
}

/// A read-only transaction of one snapshot: every number of a page read
/// at one moment (a site page's windows, read apart from its totals, once
/// counted a check the totals did not). Dropped, it rolls back.
async fn snapshot(
    db: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    db.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// `99.931`, `100`, `99.9`: a view's `round(…, 3)` without trailing zeros.
pub fn percent(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

async fn overview_html(State(s): State<StatusPages>, h: HeaderMap) -> Response {
    let r = s.overview().await;
    respond::pair(r, Form::Html, &h, s.max_age())
}

async fn overview_json(State(s): State<StatusPages>, h: HeaderMap) -> Response {
    let r = s.overview().await;
    respond::pair(r, Form::Json, &h, s.max_age())
}

async fn site_page(
    State(s): State<StatusPages>,
    Path(page): Path<String>,
    h: HeaderMap,
) -> Response {
    let (name, form) = match s.listed(&page) {
        Some(_) => (page.as_str(), Form::Html),
        None => match page.strip_suffix(".json") {
            Some(name) => (name, Form::Json),
            None => return respond::not_found(),
        },
    };
    let Some((listed, site)) = s.listed(name) else {
        return respond::not_found();
    };
    let r = s.site(listed, site).await;
    respond::pair(r, form, &h, s.max_age())
}

async fn badge(
    State(s): State<StatusPages>,
    Path((name, rest)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let Some((path, form)) = (rest.strip_suffix(".svg").map(|p| (p, Form::Svg)))
        .or_else(|| rest.strip_suffix(".json").map(|p| (p, Form::Json)))
    else {
        return respond::not_found();
    };
    let (Some(kind), Some((listed, site))) = (badges::Kind::parse(path), s.listed(&name)) else {
        return respond::not_found();
    };
    let key = format!("badge/{name}/{path}");
    let r = s.badge(listed, site, kind, key).await;
    respond::pair(r, form, &h, s.max_age())
}
