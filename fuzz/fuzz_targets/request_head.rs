//! Request heads as the gate reads them: any bytes, any split. `head_end` and
//! `leading_empty_lines` never panic and stay within the buffer, a scan resumed from any
//! point finds the same end, and `parse` of a delimited head never panics and never
//! admits a request that announces a body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_token_exporter::http::request::{head_end, leading_empty_lines, parse};

fuzz_target!(|data: &[u8]| {
    let blank = leading_empty_lines(data);
    assert!(blank <= data.len());
    let buf = &data[blank..];
    let end = head_end(buf, 0);
    if let Some(end) = end {
        assert!(end <= buf.len());
        // Resuming the scan anywhere before the end finds the same end.
        for from in [end / 2, end.saturating_sub(1)] {
            assert_eq!(head_end(buf, from), Some(end));
        }
        if let Ok(request) = parse(&buf[..end]) {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(!head.contains("\ntransfer-encoding:"));
            assert!(request.path.len() < end);
        }
    }
});
