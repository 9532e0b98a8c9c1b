//! The bzImage header reader: the first 8 bytes are the file's length (little-endian; the truncation check compares
//! it with the header), the rest is what `read_image` read from its start. Also read with the length of the bytes
//! themselves, as for a short file read whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, prefix)) = data.split_first_chunk::<8>() else {
        return;
    };
    let file_len = u64::from_le_bytes(*len);
    if let Ok(image) = kup::kernel_image::KernelImage::parse(prefix, file_len) {
        let _ = (image.release(), image.protocol(), image.cmdline_size());
    }
    let _ = kup::kernel_image::KernelImage::parse(prefix, prefix.len() as u64);
});
