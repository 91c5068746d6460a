//! `--set KEY=VALUE` overrides on a parsed TOML table, with dotted keys.

use super::ConfigError;

/// Sets `key` (dotted, e.g. `membership.heartbeat_interval`) to `value` in `table`.
///
/// The value is read as a TOML value (`false`, `3`, `"x"`, `[1, 2]`); anything that is not valid
/// TOML is taken as a plain string, so `--set log.filter=debug` works without quotes.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Override(assignment.to_string());
    let (key, raw) = assignment.split_once('=').ok_or_else(bad)?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let value = parse_value(raw.trim());
    let (last, parents) = parts.split_last().ok_or_else(bad)?;
    let mut cursor = table;
    for p in parents {
        let entry = cursor.entry((*p).to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry.as_table_mut().ok_or_else(bad)?;
    }
    cursor.insert((*last).to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
