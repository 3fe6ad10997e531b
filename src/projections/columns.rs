//! The enums that projections keep in their columns, written (on either backend) and
//! read as the text their JSON uses in the log ("confirmed", "one-click", "on-change",
//! "oppose"), so the tables hold what they always have. A column holding any other
//! text is an error that names it and the names known, never a silent default.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::sql::{Param, Value};
use super::{OutboxStatus, SubscriberStatus};
use crate::detect::Stance;
use crate::events::{from_name, DigestReason, SubscriptionChannel};

macro_rules! text_columns {
    ($($t:ty),+ $(,)?) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Text(self.as_str())
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                from_name(value.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

text_columns!(
    Stance,
    SubscriptionChannel,
    DigestReason,
    SubscriberStatus,
    OutboxStatus,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: ToSql + FromSql + PartialEq + std::fmt::Debug>(value: T, text: &str) {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let stored: String = conn.query_row("SELECT ?1", [&value], |r| r.get(0)).unwrap();
        assert_eq!(stored, text);
        let read: T = conn.query_row("SELECT ?1", [text], |r| r.get(0)).unwrap();
        assert_eq!(read, value);
    }

    #[test]
    fn columns_hold_the_names_the_log_uses() {
        round_trip(Stance::Oppose, "oppose");
        round_trip(SubscriptionChannel::OneClick, "one-click");
        round_trip(DigestReason::OnChange, "on-change");
        round_trip(SubscriberStatus::Unsubscribed, "unsubscribed");
        round_trip(OutboxStatus::Failed, "failed");
    }

    #[test]
    fn an_unknown_name_in_a_column_is_an_error_that_names_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let err = conn
            .query_row("SELECT 'paused'", [], |r| r.get::<_, SubscriberStatus>(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("paused") && err.contains("`confirmed`"),
            "{err}"
        );
    }
}
