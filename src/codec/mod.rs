//! Pure codecs: functions over bytes and values, no I/O, easy to test, fuzz and
//! benchmark. Steps wrap them; connectors use only the framing codecs and the
//! HL7 acknowledgement builder.

pub mod charset;
pub mod csv;
pub mod fixed_width;
pub mod framing;
pub mod hl7;
pub mod xml;
