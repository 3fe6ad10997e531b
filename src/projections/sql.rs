//! The projections' one way to talk to a database, whichever it is: a transaction
//! (`Tx`) that executes a statement with parameters, reads rows with typed columns, and
//! reads the log's next events. `SqliteTx` and `PgTx` implement it over rusqlite and
//! the `postgres` client, so each projection's `apply` is written once.
//!
//! Statements are written in the SQL both engines take: `?N` placeholders (turned into
//! PostgreSQL's `$N` here, and nowhere else), `ON CONFLICT ... DO UPDATE` with the
//! target table's columns qualified by its name (PostgreSQL finds a bare name
//! ambiguous with `excluded`'s), `TRUE`/`FALSE`, `CASE` where SQLite would use its
//! two-argument `MAX`, and `CAST(?N AS TEXT)` where a parameter's type cannot be
//! told from where it stands. Parameters are `Value`s, bound to whatever type the
//! server infers for them: an integer goes into `INTEGER` or `BIGINT`, a boolean into
//! `BOOLEAN` or (SQLite, which has none) 0/1.
//!
//! SQLite keeps its prepared statements in rusqlite's cache; PostgreSQL's are prepared
//! once per transaction (`PgTx`), so a chunk of thousands of events costs one round
//! trip per statement and event, not two.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{StoreError, StoredEvent};

/// A parameter's value as both engines bind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Bool(bool),
    /// An unsigned number past `i64::MAX`: refused by both binders, never wrapped.
    OutOfRange(u64),
}

/// Something that can be a statement's parameter.
pub trait Param {
    fn value(&self) -> Value<'_>;
}

impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for i64 {
    fn value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}

impl Param for u64 {
    fn value(&self) -> Value<'_> {
        i64::try_from(*self).map_or(Value::OutOfRange(*self), Value::Int)
    }
}

macro_rules! small_ints {
    ($($t:ty),+) => {$(
        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(i64::from(*self))
            }
        }
    )+};
}

small_ints!(u16, u32, i32);

impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Bool(*self)
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}

/// A column's value as read back, whichever engine held it. SQLite has no boolean
/// type: its 0/1 columns read as `Int`, PostgreSQL's `BOOLEAN` as `Bool`.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// A column that cannot be read as the caller asked: an error naming it, never a default.
#[derive(Debug, thiserror::Error)]
#[error("column {column:?} holds {found:?}, not {wanted}")]
pub struct ColumnError {
    pub column: String,
    pub found: Cell,
    pub wanted: &'static str,
}

impl From<ColumnError> for StoreError {
    fn from(e: ColumnError) -> StoreError {
        StoreError::Column(e.to_string())
    }
}

/// One row read back: its columns' names and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    names: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// Column `index`, as `T` (a missing column reads as NULL, and fails unless `T`
    /// is an `Option`).
    pub fn get<T: FromCell>(&self, index: usize) -> Result<T, ColumnError> {
        let cell = self.cells.get(index).unwrap_or(&Cell::Null);
        T::from_cell(cell).ok_or_else(|| ColumnError {
            column: self
                .names
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("#{index}")),
            found: cell.clone(),
            wanted: std::any::type_name::<T>(),
        })
    }
}

/// A Rust type a column can be read as.
pub trait FromCell: Sized {
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl FromCell for i64 {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Integers read narrower than they are stored: a value that does not fit is an
/// error, never wrapped.
macro_rules! narrowed_ints {
    ($($t:ty),+) => {$(
        impl FromCell for $t {
            fn from_cell(cell: &Cell) -> Option<Self> {
                i64::from_cell(cell).and_then(|i| <$t>::try_from(i).ok())
            }
        }
    )+};
}

narrowed_ints!(u64, u32, u16);

impl FromCell for f64 {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Real(f) => Some(*f),
            _ => None,
        }
    }
}

impl FromCell for bool {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Bool(b) => Some(*b),
            Cell::Int(0) => Some(false),
            Cell::Int(1) => Some(true),
            _ => None,
        }
    }
}

impl FromCell for String {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// A transaction on the database that holds the log and the projections.
pub trait Tx {
    /// Runs one statement; the rows it changed.
    fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64, StoreError>;
    /// Every row a query gives.
    fn query_rows(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, StoreError>;
    /// The log's events after `after`, in order, at most `limit`, ending with the one
    /// that brings their payloads to `max_bytes` (so a page of large payloads stays
    /// small in memory).
    fn events_after(
        &mut self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The first row a query gives, if any.
    fn query_opt(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, StoreError> {
        Ok(self.query_rows(sql, params)?.into_iter().next())
    }
}

/// A SQLite connection inside a transaction (a write job's, on the writer's thread).
pub struct SqliteTx<'a>(pub &'a rusqlite::Connection);

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(b))),
            Value::OutOfRange(u) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                    OutOfRange(u),
                )))
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} does not fit in a signed 64-bit column")]
struct OutOfRange(u64);

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64, StoreError> {
        let changed = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params.iter().map(|p| p.value())))?;
        Ok(changed as u64)
    }

    fn query_rows(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql)?;
        let names: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(|p| p.value())))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let cells = (0..names.len())
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(i) => Cell::Int(i),
                        ValueRef::Real(f) => Cell::Real(f),
                        ValueRef::Text(t) => match std::str::from_utf8(t) {
                            Ok(text) => Cell::Text(text.to_string()),
                            Err(e) => {
                                return Err(StoreError::Column(format!(
                                    "column {:?} holds text that is not UTF-8: {e}",
                                    names[i]
                                )))
                            }
                        },
                        ValueRef::Blob(_) => {
                            return Err(StoreError::Column(format!(
                                "column {:?} holds a blob, which no projection writes",
                                names[i]
                            )))
                        }
                    })
                })
                .collect::<Result<Vec<Cell>, StoreError>>()?;
            out.push(Row {
                names: names.clone(),
                cells,
            });
        }
        Ok(out)
    }

    fn events_after(
        &mut self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        crate::store::events_after_in(self.0, after, limit, max_bytes)
    }
}

/// A PostgreSQL transaction, with the statements prepared in it so far.
pub struct PgTx<'a, 't> {
    tx: &'a mut postgres::Transaction<'t>,
    statements: HashMap<String, postgres::Statement>,
}

impl<'a, 't> PgTx<'a, 't> {
    pub fn new(tx: &'a mut postgres::Transaction<'t>) -> PgTx<'a, 't> {
        PgTx {
            tx,
            statements: HashMap::new(),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(&postgres_placeholders(sql))?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// `?N` as PostgreSQL writes it, `$N`. Only a `?` before a digit is a placeholder: the
/// statements here hold no `?` in a literal.
fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                _ => Err(mismatch("an integer", ty)),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                _ => Err(mismatch("a float", ty)),
            },
            Value::Text(s) => {
                if <&str as postgres::types::ToSql>::accepts(ty) {
                    s.to_sql(ty, out)
                } else {
                    Err(mismatch("text", ty))
                }
            }
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 => Value::Int(i64::from(b)).to_sql(ty, out),
                _ => Err(mismatch("a boolean", ty)),
            },
            Value::OutOfRange(u) => Err(Box::new(OutOfRange(u))),
        }
    }

    // Any type the server infers: `to_sql` converts to it, or says why it cannot.
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn mismatch(what: &str, ty: &postgres::types::Type) -> Box<dyn std::error::Error + Sync + Send> {
    format!("{what} cannot be bound to a {ty} parameter").into()
}

/// Values as the `postgres` client takes parameters.
fn bound<'v>(values: &'v [Value<'_>]) -> Vec<&'v (dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Tx for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let values: Vec<Value<'_>> = params.iter().map(|p| p.value()).collect();
        Ok(self.tx.execute(&statement, &bound(&values))?)
    }

    fn query_rows(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, StoreError> {
        use postgres::types::Type;
        let statement = self.statement(sql)?;
        let values: Vec<Value<'_>> = params.iter().map(|p| p.value()).collect();
        let rows = self.tx.query(&statement, &bound(&values))?;
        let names: Arc<[String]> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        rows.iter()
            .map(|row| {
                let cells = statement
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        let cell = match *column.type_() {
                            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                            Type::INT4 => row
                                .try_get::<_, Option<i32>>(i)?
                                .map(|v| Cell::Int(v.into())),
                            Type::INT2 => row
                                .try_get::<_, Option<i16>>(i)?
                                .map(|v| Cell::Int(v.into())),
                            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Cell::Real),
                            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Cell::Bool),
                            _ => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
                        };
                        Ok(cell.unwrap_or(Cell::Null))
                    })
                    .collect::<Result<Vec<Cell>, StoreError>>()?;
                Ok(Row {
                    names: names.clone(),
                    cells,
                })
            })
            .collect()
    }

    fn events_after(
        &mut self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        crate::store::pg_events_after_in(self.tx, after, limit, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            postgres_placeholders("SELECT ?1, ?12 WHERE a = ?2 AND b ? c"),
            "SELECT $1, $12 WHERE a = $2 AND b ? c"
        );
    }

    #[test]
    fn sqlite_binds_values_and_reads_them_back_typed() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut tx = SqliteTx(&conn);
        tx.execute(
            "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b INTEGER, n TEXT)",
            &[],
        )
        .unwrap();
        let none: Option<String> = None;
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
            &[&7u64, &0.5f64, &"x", &true, &none],
        )
        .unwrap();
        let row = tx.query_opt("SELECT * FROM t", &[]).unwrap().unwrap();
        assert_eq!(row.names(), ["i", "r", "s", "b", "n"]);
        assert_eq!(row.get::<u64>(0).unwrap(), 7);
        assert_eq!(row.get::<f64>(1).unwrap(), 0.5);
        assert_eq!(row.get::<String>(2).unwrap(), "x");
        assert!(row.get::<bool>(3).unwrap());
        assert_eq!(row.get::<Option<String>>(4).unwrap(), None);
        let wrong = row.get::<u64>(2).unwrap_err().to_string();
        assert!(wrong.contains("\"s\""), "{wrong}");
        let too_big = tx.execute("INSERT INTO t (i) VALUES (?1)", &[&u64::MAX]);
        assert!(too_big.is_err(), "{too_big:?}");
    }
}
