//! Pure codecs: functions over bytes and values, no I/O, easy to test, fuzz and
//! benchmark. Steps wrap them; connectors never see them.

pub mod xml;
