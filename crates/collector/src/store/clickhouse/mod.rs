//! The ClickHouse event and metric backend (scale-out mode, the `clickhouse` crate over
//! HTTP): error events and metric windows. Works on ClickHouse 18.16 (Debian's package)
//! and on current releases: no `DateTime64`, `Map`, `JSON`, TTL or
//! `RowBinaryWithNamesAndTypes` (hence `with_validation(false)`).
