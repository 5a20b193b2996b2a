//! The console backend: guest console rings and console_io to the serial port.
