//! StarRocks knowledge shared by the loader and the emulator: column types and
//! typed values (`types.rs`) with the text forms of decimals, dates and
//! datetimes (`text.rs`), the bucket hash, table definitions (DDL), and the
//! SQL expressions Stream Load accepts in its `columns` and `where` headers.

pub mod bucket;
pub mod ddl;
pub mod expr;
pub mod sql;
pub mod text;
pub mod types;
