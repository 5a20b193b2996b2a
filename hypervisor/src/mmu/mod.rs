//! Machine memory: the frame table and allocator, the m2p, and checked access to guest
//! virtual memory.

mod fast;
pub mod frames;
pub mod guest;
pub mod hypercalls;
mod memory_op;
pub mod pagetable;

pub use frames::{FrameInfo, Frames, MAX_FRAMES, PageType, Partial, TypeState};
