//! `sluice status`: a serve's `/status` as a table, one line per connected proxy (what
//! `istioctl proxy-status` shows).

use serde_json::Value;

use super::state::short_name;
use crate::xds::Kind;

/// Fetches `URL/status` (plain HTTP/1.1, as the admin port speaks).
pub async fn fetch(admin: &str) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    let base = admin.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let uri: axum::http::Uri = format!("{base}/status").parse()?;
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
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
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
}
