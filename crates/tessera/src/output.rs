//! Human-readable tables and JSON output for `tessera ctl`.

use serde::Serialize;

/// Prints `rows` under `headers`, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `-` for an absent value.
pub fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// Who may auto-join whom.
pub fn grants(grants: &[tessera_core::api::GrantView]) {
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                g.granter_name.clone().unwrap_or_else(|| g.granter.clone()),
                g.grantee_name.clone().unwrap_or_else(|| g.grantee.clone()),
                g.scopes.join(","),
                g.state.clone(),
                g.expires_at.clone(),
                opt(g.last_used_at.as_deref()),
                g.id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "GRANTER",
            "MAY BE JOINED BY",
            "SCOPES",
            "STATE",
            "EXPIRES",
            "LAST USED",
            "ID",
        ],
        &rows,
    );
}
