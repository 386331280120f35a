//! A raw heap block: allocated and freed through the global allocator, one touch on each
//! end, and `Send` so that it can be freed on another thread.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

/// A block of `size` bytes (alignment 8) from the global allocator, freed on drop.
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: a `Block` owns its memory exclusively, like a `Box<[u8]>`; the global allocator
// accepts frees from any thread.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` bytes (at least 1) and writes `tag` to the first and last byte.
    #[inline]
    pub fn new(size: usize, tag: u8) -> Block {
        let size = size.max(1);
        let layout = Self::layout(size);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(p) else {
            handle_alloc_error(layout)
        };
        // SAFETY: both offsets are inside the `size` bytes just allocated.
        unsafe {
            ptr.as_ptr().write(tag);
            ptr.as_ptr().add(size - 1).write(tag);
        }
        Block { ptr, size }
    }

    #[inline]
    fn layout(size: usize) -> Layout {
        match Layout::from_size_align(size, 8) {
            Ok(l) => l,
            Err(_) => panic!("block size {size} too large"),
        }
    }

    /// The size asked for.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The first byte (a read of the block's memory).
    #[inline]
    pub fn first(&self) -> u8 {
        // SAFETY: the block is live and at least one byte long.
        unsafe { self.ptr.as_ptr().read() }
    }
}

impl Drop for Block {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.size)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_work_across_threads() {
        let b = Block::new(100, 7);
        assert_eq!(b.size(), 100);
        assert_eq!(b.first(), 7);
        let z = Block::new(0, 1);
        assert_eq!(z.size(), 1);
        std::thread::spawn(move || drop((b, z))).join().unwrap();
    }
}
