//! `CALLBRIDGE_*` environment overrides: `CALLBRIDGE_AUTH__HS256_SECRET=x` sets
//! `auth.hs256_secret`; `__` separates nesting levels. Values are read as TOML
//! (numbers, booleans, arrays) when they parse as such, else as strings.

use super::ConfigError;

/// The prefix of override variables.
pub const ENV_PREFIX: &str = "CALLBRIDGE_";

/// Applies every `CALLBRIDGE_*` variable in `env` to `table`.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Env {
                var,
                message: "empty key segment; use CALLBRIDGE_SECTION__KEY".into(),
            });
        }
        set_path(table, &path, parse_value(&value)).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = match path.split_last() {
        Some(split) => split,
        None => return Err("no key".into()),
    };
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "`{segment}` is not a section, cannot set a key inside it"
                ));
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}
