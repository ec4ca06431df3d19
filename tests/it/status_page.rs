//! The status page at `/` in a real browser: Debian's `chromium`, headless, renders the
//! page of an exporter watching tokens in several states on the Vault double. The test
//! reads the DOM the browser built (a row per token, most urgent first, the state classes,
//! the metrics link, a hostile name shown as text, no token anywhere) and decodes the
//! screenshot to check it is not blank.
//!
//! Without `chromium` the test fails under CI (`CI=true`, as `.ci/run` sets it), and skips
//! with a message elsewhere.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{file_entry, write_token, Exporter};
use vault_double::{TokenSpec, VaultDouble};

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "chromium is not installed (.ci/run installs it)");
        eprintln!(
            "SKIPPED: chromium is not installed; `apt-get install chromium` to run this test"
        );
    }
    found
}

/// Runs headless chromium with `args` and a fresh profile; its stdout. 60 s at most.
fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

#[test]
fn the_status_page_renders_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let vault = VaultDouble::start();
    let tokens_dir = common::temp_dir("status-page-tokens");
    let mut tokens = Vec::new();
    let mut yaml = String::from("vaults:\n");
    let mut add = |name: &str, token: Option<String>| {
        let path = tokens_dir.join(format!("{}.token", tokens.len()));
        if let Some(token) = token {
            write_token(&path, &token);
            tokens.push(token);
        }
        // Quoted: the hostile name is YAML too.
        let quoted = serde_json::to_string(name).unwrap();
        yaml.push_str(&file_entry(&quoted, &vault.url(), &path, ""));
    };
    let revoked = vault.add_token(TokenSpec::service(600));
    vault.revoke(&revoked);
    add("healthy", Some(vault.add_token(TokenSpec::service(600))));
    add("root", Some(vault.add_token(TokenSpec::root_init())));
    add(
        "fixed-lease",
        Some(vault.add_token(TokenSpec::service(600).renewable(false))),
    );
    add("revoked", Some(revoked));
    add("<b>x</b>", None);
    let exporter = Exporter::with_config("status-page", &yaml, &[]);
    exporter.wait_for(Duration::from_secs(15), "every state", |s| {
        [
            ("healthy", "renewing"),
            ("root", "never_expires"),
            ("fixed-lease", "not_renewable"),
            ("revoked", "invalid"),
            ("<b>x</b>", "unknown"),
        ]
        .iter()
        .all(|(vault, state)| s.state(vault).as_deref() == Some(*state))
            && s.of("vault_health_up", "healthy", &[]) == Some(1.0)
    });

    let url = format!("http://{}/", exporter.addr);
    let work = common::temp_dir("status-page-browser");
    let dom = run_chromium(
        &chromium,
        &work.join("profile-dom"),
        &["--dump-dom".into(), url.clone()],
    );
    // The page the browser built: one row per token, most urgent first.
    let body = dom
        .split("<tbody>")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no table body in the DOM:\n{dom}"));
    let rows: Vec<&str> = body.split("<tr").skip(1).collect();
    assert_eq!(rows.len(), 5, "a row per token:\n{body}");
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| {
            let class = row.split('"').nth(1).unwrap_or("");
            let name = row
                .split("<td class=\"vault\">")
                .nth(1)
                .and_then(|r| r.split("</td>").next())
                .unwrap_or("");
            (class, name)
        })
        .collect();
    assert_eq!(
        order,
        [
            ("invalid", "revoked"),
            ("not_renewable", "fixed-lease"),
            ("unknown", "&lt;b&gt;x&lt;/b&gt;"),
            ("renewing", "healthy"),
            ("never_expires", "root"),
        ],
        "most urgent first, the hostile name as text"
    );
    for (state, _) in &order {
        assert!(
            body.contains(&format!("<span class=\"state {state}\">{state}</span>")),
            "a coloured {state} badge"
        );
    }
    assert!(!dom.contains("<b>"), "no element from a config value");
    assert!(dom.contains("<a href=\"/metrics\">Metrics</a>"));
    assert!(dom.contains("health ok\">active<"), "the Vault's health");
    assert!(dom.contains("token_source"), "the last failure reason");
    assert!(!dom.contains("<script"), "no JavaScript");
    for token in &tokens {
        assert!(!dom.contains(token.as_str()), "a token in the page");
    }

    // The screenshot is a picture of that page, not a blank one.
    let png = work.join("status.png");
    run_chromium(
        &chromium,
        &work.join("profile-shot"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,700".into(),
            url,
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    let image = decode_png(&bytes);
    assert_eq!((image.width, image.height), (1400, 700));
    let colours: std::collections::HashSet<[u8; 3]> = image.pixels.iter().copied().collect();
    // Text in several colours, badges, anti-aliasing: hundreds; a blank page has one.
    assert!(colours.len() > 50, "{} colours", colours.len());
    let white = image
        .pixels
        .iter()
        .filter(|p| **p == [255, 255, 255])
        .count();
    let share = white as f64 / image.pixels.len() as f64;
    assert!(
        (0.3..0.98).contains(&share),
        "white background with content on it: {share:.2}"
    );
    // The green of the renewing badge (#1a7f37) and the red of the invalid one (#cf222e).
    for (name, rgb) in [("green", [0x1a, 0x7f, 0x37]), ("red", [0xcf, 0x22, 0x2e])] {
        assert!(colours.contains(&rgb), "the {name} badge is drawn");
    }
}

/// An RGB image.
struct Image {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

/// Decodes the 8-bit RGB or RGBA, non-interlaced PNG chromium writes: the IDAT chunks
/// inflated (flate2), each scanline unfiltered as the PNG specification says.
fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    let (mut at, mut header, mut data) = (8, None, Vec::new());
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let body = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => header = Some(body.to_vec()),
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let header = header.expect("IHDR");
    let width = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    let height = u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize;
    let (depth, colour, interlace) = (header[8], header[9], header[12]);
    assert_eq!((depth, interlace), (8, 0), "8-bit, not interlaced");
    let channels = match colour {
        2 => 3,
        6 => 4,
        other => panic!("PNG colour type {other}"),
    };
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .expect("inflate");
    let stride = width * channels;
    assert_eq!(raw.len(), height * (stride + 1), "scanline bytes");
    let mut pixels = Vec::with_capacity(width * height);
    let mut previous = vec![0u8; stride];
    for line in raw.chunks(stride + 1) {
        let (filter, line) = (line[0], &line[1..]);
        let mut current = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels {
                current[i - channels]
            } else {
                0
            };
            let b = previous[i];
            let c = if i >= channels {
                previous[i - channels]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                other => panic!("PNG filter {other}"),
            };
            current[i] = line[i].wrapping_add(predicted);
        }
        pixels.extend(current.chunks(channels).map(|p| [p[0], p[1], p[2]]));
        previous = current;
    }
    Image {
        width,
        height,
        pixels,
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
