//! `sluice status`: a serve's `/status` as a table, one line per connected proxy (what
//! `istioctl proxy-status` shows); with `--endpoints`, its `/endpoints`, one line per probed
//! endpoint.

use serde_json::Value;

use super::state::short_name;
use crate::xds::Kind;

/// Fetches `URL/status` (plain HTTP/1.1, as the admin port speaks).
pub async fn fetch(admin: &str) -> anyhow::Result<Value> {
    fetch_path(admin, "/status").await
}

/// Fetches the JSON document at `URL` + `path` of a serve's admin port.
pub async fn fetch_path(admin: &str, path: &str) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    let base = admin.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let uri: axum::http::Uri = format!("{base}{path}").parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{uri}: no host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {authority}: {e} (is `sluice serve` running with that --admin-listen?)"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let request = axum::http::Request::get(uri.clone())
        .header("host", authority.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("{uri} answered {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The status document as a table.
pub fn render(status: &Value) -> String {
    let mut rows = vec![{
        let mut head = vec![
            "NAME".to_owned(),
            "CLUSTER".to_owned(),
            "GROUP".to_owned(),
            "MODE".to_owned(),
        ];
        head.extend(Kind::ALL.iter().map(|k| short_name(*k).to_owned()));
        head.push("HALTED".to_owned());
        head.push("LAST NACK".to_owned());
        head
    }];
    for p in status["proxies"].as_array().into_iter().flatten() {
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let mut row = vec![
            text(&p["id"]),
            text(&p["cluster"]),
            text(&p["group"]),
            text(&p["mode"]),
        ];
        for kind in Kind::ALL {
            let t = &p["types"][short_name(kind)];
            let nack = &p["last_nack"];
            let refused = |sent: &str| nack["type"] == short_name(kind) && nack["version"] == sent;
            row.push(if t.is_null() {
                "-".to_owned()
            } else {
                match (t["acked"].as_str(), t["sent"].as_str()) {
                    (Some(a), Some(s)) if a == s => format!("SYNCED {a}"),
                    (_, Some(s)) if refused(s) => format!("NACKED {s}"),
                    (_, Some(s)) => format!("STALE (sent {s})"),
                    _ => "NOT SENT".to_owned(),
                }
            });
        }
        // The canaries its guards halted, as it last reported them ("?": it does not report,
        // see `generate --halt-reports`).
        row.push(match p["halted"].as_array() {
            None => "?".to_owned(),
            Some(splits) if splits.is_empty() => "-".to_owned(),
            Some(splits) => splits.iter().map(text).collect::<Vec<_>>().join(","),
        });
        row.push(match &p["last_nack"] {
            Value::Null => "-".to_owned(),
            n => format!(
                "{} {}: {}",
                text(&n["type"]),
                text(&n["version"]),
                text(&n["message"]).lines().next().unwrap_or_default()
            ),
        });
        rows.push(row);
    }
    let mut out = String::new();
    let config = &status["config"];
    out.push_str(&format!(
        "config {} ({} proxies){}\n",
        config["version"].as_str().unwrap_or("(none loaded)"),
        rows.len() - 1,
        if config["error"].is_null() {
            String::new()
        } else {
            format!(
                "\nthe latest read of the input was refused; the config above keeps serving:\n{}",
                config["error"].as_str().unwrap_or_default()
            )
        }
    ));
    out.push_str(&table(&rows));
    for halt in status["fleet_halts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "fleet halt: the canary of split {} is out of every proxy's split (halted by {}; lifted when the split changes)\n",
            halt["split"], halt["by"]
        ));
    }
    out
}

/// Rows as aligned columns.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `/endpoints` document as a table, one line per probed endpoint; `now` (seconds since
/// the epoch) dates the last changes.
pub fn render_endpoints(doc: &Value, now: u64) -> String {
    let mut rows = vec![
        [
            "ENDPOINT",
            "CLUSTERS",
            "HEALTH",
            "PROBED BY",
            "PROBES",
            "CHANGED",
            "LAST ERROR",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let endpoints = doc["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
    for e in endpoints {
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let clusters: Vec<&str> = e["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            text(&e["key"]),
            if clusters.is_empty() {
                "-".to_owned()
            } else {
                clusters.join(",")
            },
            text(&e["health"]),
            text(&e["probed_by"]),
            e["probes"].as_u64().unwrap_or(0).to_string(),
            e["changed_at"].as_u64().map_or_else(
                || "never".to_owned(),
                |at| format!("{}s ago", now.saturating_sub(at)),
            ),
            text(&e["last_error"]),
        ]);
    }
    format!(
        "{} probed endpoint{}\n{}",
        endpoints.len(),
        if endpoints.len() == 1 { "" } else { "s" },
        table(&rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_proxy_row_shows_synced_stale_and_nack() {
        let status = json!({"config": {"version": "abc", "error": null}, "proxies": [{
            "id": "edge-1", "cluster": "edge", "mode": "delta",
            "types": {"CDS": {"acked": "v1", "sent": "v1"}, "RDS": {"acked": "v1", "sent": "v2"},
                      "LDS": {"acked": "v1", "sent": "v3"}},
            "last_nack": {"type": "RDS", "version": "v2", "message": "bad route\nmore"},
        }]});
        let table = render(&status);
        assert!(table.contains("edge-1"), "{table}");
        assert!(table.contains("SYNCED v1"), "{table}");
        assert!(table.contains("NACKED v2"), "{table}");
        assert!(table.contains("STALE (sent v3)"), "{table}");
        assert!(table.contains("RDS v2: bad route"), "{table}");
        assert!(!table.contains("more"), "{table}");
    }

    #[test]
    fn halted_canaries_show_per_proxy_and_for_the_fleet() {
        let status = json!({"config": {"version": "abc", "error": null}, "proxies": [
            {"id": "a", "types": {}, "last_nack": null, "halted": ["shop-split", "cart"]},
            {"id": "b", "types": {}, "last_nack": null, "halted": []},
            {"id": "c", "types": {}, "last_nack": null, "halted": null},
        ], "fleet_halts": [{"split": "shop-split", "by": "a", "at": 1, "fingerprint": "f"}]});
        let table = render(&status);
        let cell = |id: &str| {
            let row = table.lines().find(|l| l.starts_with(id)).unwrap();
            // HALTED is the column before LAST NACK (`-` here).
            let cells: Vec<&str> = row.split_whitespace().collect();
            cells[cells.len() - 2].to_owned()
        };
        assert!(table.lines().nth(1).unwrap().contains("HALTED"), "{table}");
        assert_eq!(cell("a "), "shop-split,cart", "{table}");
        assert_eq!(cell("b "), "-", "{table}");
        assert_eq!(cell("c "), "?", "{table}");
        assert!(
            table.contains("fleet halt: the canary of split \"shop-split\" is out of every proxy's split (halted by \"a\""),
            "{table}"
        );
    }

    #[test]
    fn an_endpoint_row_shows_health_prober_probes_and_last_change() {
        let doc = json!({"replica": "sluice-serve 0.1.0 at 127.0.0.1:18000 (pid 7)", "endpoints": [{
            "key": "10.0.0.5:8080", "clusters": ["outbound|80||shop", "outbound|80|v1|shop"],
            "health": "UNHEALTHY", "probed_by": "sluice-serve 0.1.0 at 127.0.0.1:18000 (pid 7)",
            "probes": 12, "changed_at": 1000, "last_error": "connect: Connection refused",
        }, {
            "key": "10.0.0.6:8080", "clusters": [], "health": "UNKNOWN", "probed_by": "r",
            "probes": 0, "changed_at": null, "last_error": null,
        }]});
        let table = render_endpoints(&doc, 1042);
        assert!(table.starts_with("2 probed endpoints\n"), "{table}");
        let row = table
            .lines()
            .find(|l| l.starts_with("10.0.0.5:8080"))
            .unwrap();
        for part in [
            "outbound|80||shop,outbound|80|v1|shop",
            "UNHEALTHY",
            "(pid 7)",
            " 12 ",
            "42s ago",
            "connect: Connection refused",
        ] {
            assert!(row.contains(part), "{part:?} in {row}");
        }
        let row = table
            .lines()
            .find(|l| l.starts_with("10.0.0.6:8080"))
            .unwrap();
        assert!(row.contains("UNKNOWN") && row.contains("never"), "{row}");
    }
}
