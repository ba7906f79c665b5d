//! `mqtt` connector: being written on this branch; its cargo feature is off by default until it lands.
