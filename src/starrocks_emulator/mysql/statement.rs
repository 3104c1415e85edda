//! The statements the emulator's MySQL port answers (module doc of
//! `mysql`), each with StarRocks' columns and error codes.

use super::SERVER_VERSION;
use super::wire::Reply;
use crate::starrocks::sql::{Cursor, Tok, lex};
use crate::starrocks_emulator::Ctx;

pub(super) fn unknown_db(db: &str) -> Reply {
    Reply::err(1049, "42000", &format!("Unknown database '{db}'"))
}

pub(super) fn use_db(ctx: &Ctx, db: &mut Option<String>, name: &str) -> Reply {
    if ctx.cfg.catalog.databases.iter().any(|d| d == name) {
        *db = Some(name.to_string());
        Reply::Ok
    } else {
        unknown_db(name)
    }
}

const ANSWERS: &str = "SHOW CREATE TABLE, ADMIN SHOW FRONTEND CONFIG, SHOW DATABASES, SHOW TABLES, USE, SET, \
     and SELECT of literals, @@variables, database(), version() and current_version()";

fn unsupported(sql: &str) -> Reply {
    let shown: String = sql.chars().take(120).collect();
    Reply::err(
        1064,
        "42000",
        &format!(
            "The StarRocks emulator has no query engine; it answers {ANSWERS} (rows: GET /_emulator/{{db}}/{{table}}). Not run: {shown}"
        ),
    )
}

fn one_row(columns: &[&str], values: Vec<Option<String>>) -> Reply {
    Reply::Rows { columns: columns.iter().map(|c| c.to_string()).collect(), rows: vec![values] }
}

pub(super) fn statement(ctx: &Ctx, db: &mut Option<String>, id: u32, sql: &str) -> Reply {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    if sql.len() >= 6 && sql[..6].eq_ignore_ascii_case("select") {
        return select(ctx, db, id, sql);
    }
    let Ok(toks) = lex(sql, 1) else { return unsupported(sql) };
    let mut c = Cursor::new(&toks);
    if c.eat_kw("SET") {
        return Reply::Ok;
    }
    if c.eat_kw("USE") {
        return match c.ident() {
            Ok(name) if c.at_end() => use_db(ctx, db, &name),
            _ => unsupported(sql),
        };
    }
    if c.eat_kw("ADMIN") {
        if !(c.eat_kw("SHOW") && c.eat_kw("FRONTEND") && c.eat_kw("CONFIG")) {
            return unsupported(sql);
        }
        let pattern = if c.eat_kw("LIKE") {
            match c.advance() {
                Some(Tok::Str(s)) => Some(s.clone()),
                _ => return unsupported(sql),
            }
        } else {
            None
        };
        if !c.at_end() {
            return unsupported(sql);
        }
        return frontend_config(ctx, pattern.as_deref());
    }
    if !c.eat_kw("SHOW") {
        return unsupported(sql);
    }
    show(ctx, db, &mut c, sql)
}

/// `SHOW DATABASES`, `SHOW TABLES [FROM db]`, `SHOW CREATE TABLE [db.]t`
/// (after `SHOW`).
fn show(ctx: &Ctx, db: &Option<String>, c: &mut Cursor<'_>, sql: &str) -> Reply {
    if c.eat_kw("DATABASES") && c.at_end() {
        let rows = ctx.cfg.catalog.databases.iter().map(|d| vec![Some(d.clone())]).collect();
        return Reply::Rows { columns: vec!["Database".into()], rows };
    }
    if c.eat_kw("TABLES") {
        let name = if c.eat_kw("FROM") || c.eat_kw("IN") {
            match c.ident() {
                Ok(n) => Some(n),
                Err(_) => return unsupported(sql),
            }
        } else {
            db.clone()
        };
        if !c.at_end() {
            return unsupported(sql);
        }
        let Some(name) = name else { return no_database() };
        if !ctx.cfg.catalog.databases.contains(&name) {
            return unknown_db(&name);
        }
        let cat = &ctx.cfg.catalog;
        let mut names: Vec<String> = cat.tables.iter().filter(|t| t.db == name).map(|t| t.name.clone()).collect();
        names.extend(cat.views.iter().filter(|v| v.db == name).map(|v| v.name.clone()));
        names.sort();
        let rows = names.into_iter().map(|n| vec![Some(n)]).collect();
        return Reply::Rows { columns: vec![format!("Tables_in_{name}")], rows };
    }
    if c.eat_kw("CREATE") && c.eat_kw("TABLE") {
        let Ok(first) = c.ident() else { return unsupported(sql) };
        let (dbname, table) = if c.eat_sym(".") {
            match c.ident() {
                Ok(t) => (Some(first), t),
                Err(_) => return unsupported(sql),
            }
        } else {
            (db.clone(), first)
        };
        if !c.at_end() {
            return unsupported(sql);
        }
        let Some(dbname) = dbname else { return no_database() };
        let cat = &ctx.cfg.catalog;
        if !cat.databases.contains(&dbname) {
            return unknown_db(&dbname);
        }
        if let Some(t) = cat.table(&dbname, &table) {
            return one_row(&["Table", "Create Table"], vec![Some(t.name.clone()), Some(t.show_create())]);
        }
        if let Some(v) = cat.views.iter().find(|v| v.db == dbname && v.name.eq_ignore_ascii_case(&table)) {
            return one_row(
                &["View", "Create View", "character_set_client", "collation_connection"],
                vec![Some(v.name.clone()), Some(v.sql.clone()), Some("utf8".into()), Some("utf8_general_ci".into())],
            );
        }
        return Reply::err(1051, "42S02", &format!("Unknown table '{dbname}.{table}'"));
    }
    unsupported(sql)
}

fn no_database() -> Reply {
    Reply::err(1046, "3D000", "No database selected")
}

/// `ADMIN SHOW FRONTEND CONFIG`: the FE settings the emulator models, with
/// StarRocks' columns. Reading them needs the OPERATE privilege on SYSTEM.
fn frontend_config(ctx: &Ctx, pattern: Option<&str>) -> Reply {
    if !ctx.cfg.operate {
        return Reply::err(
            1227,
            "42000",
            "Access denied; you need (at least one of) the OPERATE privilege(s) on SYSTEM for this operation",
        );
    }
    let r = &ctx.cfg.registry;
    let settings: [(&str, String, &str); 3] = [
        ("label_keep_max_second", (r.label_keep_max_ms / 1000).to_string(), "long"),
        ("max_running_txn_num_per_db", r.max_running_txn_num_per_db.to_string(), "long"),
        ("prepared_transaction_default_timeout_second", (r.prepared_default_timeout_ms / 1000).to_string(), "int"),
    ];
    let rows = settings
        .into_iter()
        .filter(|(k, _, _)| pattern.is_none_or(|p| like(p, k)))
        .map(|(k, v, ty)| {
            [k, "[]", v.as_str(), ty, "true", ""].into_iter().map(|s| Some(s.to_string())).collect::<Vec<_>>()
        })
        .collect();
    Reply::Rows {
        columns: ["Key", "AliasNames", "Value", "Type", "IsMutable", "Comment"].iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

/// SQL LIKE, case-insensitive as StarRocks' config matcher: `%` any run, `_` one character.
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// `SELECT item, …  [LIMIT n]` where each item is a literal, an
/// `@@variable`, or one of the session functions clients ask on connect.
fn select(ctx: &Ctx, db: &Option<String>, id: u32, sql: &str) -> Reply {
    let body = sql[6..].trim();
    let body = match body.to_ascii_lowercase().rfind(" limit ") {
        Some(i) if body[i + 7..].trim().parse::<u64>().is_ok() => body[..i].trim(),
        _ => body,
    };
    if body.is_empty() {
        return unsupported(sql);
    }
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for item in body.split(',') {
        let item = item.trim();
        // `expr [AS] alias`
        let (expr, alias) = match item.rsplit_once(char::is_whitespace) {
            Some((e, a)) if !e.trim().is_empty() && !a.contains('(') => {
                let e = e.trim();
                let e = e.strip_suffix(" as").or_else(|| e.strip_suffix(" AS")).unwrap_or(e).trim();
                (e, a.trim_matches('`').to_string())
            }
            _ => (item, item.to_string()),
        };
        let lower = expr.to_ascii_lowercase();
        let value = if let Some(var) = lower.strip_prefix("@@") {
            let var = var.strip_prefix("session.").or_else(|| var.strip_prefix("global.")).unwrap_or(var);
            match variable(var) {
                Some(v) => Some(v.to_string()),
                None => return Reply::err(1193, "HY000", &format!("Unknown system variable '{var}'")),
            }
        } else if lower == "database()" || lower == "schema()" {
            db.clone()
        } else if lower == "version()" {
            Some(SERVER_VERSION.to_string())
        } else if lower == "current_version()" {
            Some(format!("rockfeed-emulator-{}", env!("CARGO_PKG_VERSION")))
        } else if lower == "connection_id()" {
            Some(id.to_string())
        } else if lower == "current_user()" || lower == "user()" {
            Some(format!("'{}'@'%'", ctx.cfg.user))
        } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
            Some(lower.clone())
        } else if let Some(s) = expr.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            Some(s.to_string())
        } else {
            return unsupported(sql);
        };
        columns.push(alias);
        values.push(value);
    }
    Reply::Rows { columns, rows: vec![values] }
}

/// The session variables clients read on connect, with StarRocks' values.
fn variable(name: &str) -> Option<&'static str> {
    Some(match name {
        "version_comment" => "StarRocks emulator (rockfeed)",
        "version" => SERVER_VERSION,
        "max_allowed_packet" => "33554432",
        "wait_timeout" => "28800",
        "interactive_timeout" => "3600",
        "net_write_timeout" => "60",
        "autocommit" => "1",
        "tx_isolation" | "transaction_isolation" => "REPEATABLE-READ",
        "sql_mode" => "ONLY_FULL_GROUP_BY",
        "time_zone" | "system_time_zone" => "UTC",
        "lower_case_table_names" => "0",
        "character_set_client" | "character_set_connection" | "character_set_results" | "character_set_server" => {
            "utf8"
        }
        "collation_connection" | "collation_server" => "utf8_general_ci",
        "query_timeout" => "300",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_as_sql_does() {
        assert!(like("max_running_txn_num_per_db", "MAX_RUNNING_TXN_NUM_PER_DB"));
        assert!(like("%txn%", "max_running_txn_num_per_db"));
        assert!(like("label_keep_max_secon_", "label_keep_max_second"));
        assert!(!like("txn", "max_running_txn_num_per_db"));
        assert!(like("%", ""));
    }
}
