//! xenstored: the xenstore protocol served to every domain.
