//! A tiny WebDriver client for the web UI's browser tests: Debian's Chromium driven by its
//! chromedriver (installed by `tests/browser/install.sh`), spoken to with the harness's raw
//! HTTP client. Enough to navigate, find elements, click, read text and page source, and
//! take screenshots.

use crate::common::gateway::{Reply, parse_reply};
use base64::Engine as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Debian's packages put them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C WebDriver key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process on a free loopback port; killed (by its own PID) when dropped.
pub struct Driver {
    addr: SocketAddr,
    child: std::process::Child,
}

impl Driver {
    /// Starts chromedriver. Panics, never skips, when Chromium or its driver is missing.
    pub async fn start() -> Driver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the browser tests need Chromium and its driver; \
                 run tests/browser/install.sh (CI's .ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        for _ in 0..300 {
            if let Some(reply) = request(driver.addr, "GET", "/status", b"").await
                && reply.status == 200
                && reply.json()["value"]["ready"] == true
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not become ready within 30 s");
    }

    /// A new headless Chromium session with a fresh profile.
    pub async fn session(&self) -> Session {
        let profile =
            std::env::temp_dir().join(format!("s3state-chromium-{}", uuid::Uuid::new_v4()));
        let capabilities = serde_json::json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }}
        });
        let reply = call(self.addr, "POST", "/session", Some(capabilities)).await;
        let id = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        Session {
            addr: self.addr,
            id,
            profile,
            browser_pid: reply["value"]["capabilities"]["goog:processID"].as_u64(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session. [`Session::quit`] closes the browser.
pub struct Session {
    addr: SocketAddr,
    id: String,
    profile: PathBuf,
    /// The browser's process, ended by its PID if the session is dropped without
    /// [`Session::quit`] (a failed test), so that no Chromium outlives the test.
    browser_pid: Option<u64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(pid) = self.browser_pid.take() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One HTTP/1.1 request to chromedriver, read up to its `Content-Length` (chromedriver keeps
/// connections open, so reading to the end would wait); `None` if it is not listening.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // A screenshot or a page load takes a while; nothing takes two minutes.
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return Some(());
            }
            raw.extend_from_slice(&chunk[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if length.is_some_and(|length| raw.len() >= split + 4 + length) {
                    return Some(());
                }
            }
        }
    })
    .await;
    read.expect("chromedriver answered within two minutes")?;
    Some(parse_reply(&raw))
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = request(addr, method, path, body.as_bytes())
        .await
        .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
    let json = reply.json();
    assert_eq!(reply.status, 200, "WebDriver {method} {path}: {json}");
    json
}

impl Session {
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.id),
            body,
        )
        .await["value"]
            .take()
    }

    /// Opens `url` and waits for the page to load.
    pub async fn navigate(&self, url: &str) {
        self.command("POST", "/url", Some(serde_json::json!({ "url": url })))
            .await;
    }

    /// The first element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Option<Element<'_>> {
        let body = serde_json::json!({ "using": "css selector", "value": css });
        let found = self.command("POST", "/elements", Some(body)).await;
        found.as_array()?.first().map(|element| Element {
            session: self,
            id: element[ELEMENT_KEY].as_str().unwrap().to_owned(),
        })
    }

    /// The first element `css` selects; panics when there is none.
    pub async fn get(&self, css: &str) -> Element<'_> {
        match self.find(css).await {
            Some(element) => element,
            None => panic!(
                "no element {css:?} on {}:\n{}",
                self.url().await,
                self.source().await
            ),
        }
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.command("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (at most 30 s, then panics) until the page's URL contains `part` and its
    /// document has loaded: a click that submits a form returns before the navigation it
    /// starts has finished.
    pub async fn wait_for_url(&self, part: &str) {
        for _ in 0..300 {
            let url = self.url().await;
            if url.contains(part) {
                let ready = self
                    .command(
                        "POST",
                        "/execute/sync",
                        Some(serde_json::json!({ "script": "return document.readyState", "args": [] })),
                    )
                    .await;
                if ready == "complete" {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the page did not reach {part:?}; it is at {}",
            self.url().await
        );
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.command("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML, as the browser has it.
    pub async fn source(&self) -> String {
        self.command("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Closes the browser and removes its profile.
    pub async fn quit(mut self) {
        let closed = request(self.addr, "DELETE", &format!("/session/{}", self.id), b"").await;
        if closed.is_some_and(|reply| reply.status == 200) {
            self.browser_pid = None;
        }
    }
}

/// An element on the page.
pub struct Element<'s> {
    session: &'s Session,
    id: String,
}

impl Element<'_> {
    /// Clicks it (and waits for a navigation it starts).
    pub async fn click(&self) {
        self.session
            .command(
                "POST",
                &format!("/element/{}/click", self.id),
                Some(serde_json::json!({})),
            )
            .await;
    }

    /// Its visible text.
    pub async fn text(&self) -> String {
        self.session
            .command("GET", &format!("/element/{}/text", self.id), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `target/ui-screenshots/<name>.png` in the repository, where CI keeps its logs.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/ui-screenshots")
        .join(format!("{name}.png"))
}
