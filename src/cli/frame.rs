//! `dna frame decode` / `dna frame encode`.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use bytes::BytesMut;
use clap::Subcommand;
use serde_json::json;

use dna_p2p::wire::{decode_exact, encode_frame, FrameError, FrameLimits, FrameRef, MessageType};

#[derive(Debug, Subcommand)]
pub(super) enum FrameCommand {
    /// Read one frame from stdin (hex, whitespace ignored; or binary with --raw) and print
    /// its header fields, or the exact error (exit status 1).
    Decode {
        /// Read binary bytes instead of hex.
        #[arg(long)]
        raw: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Largest payload accepted, in bytes.
        #[arg(long, default_value_t = FrameLimits::default().max_payload)]
        max_payload: u32,
    },
    /// Read a payload from stdin (binary) and write the frame as hex (or binary with --raw).
    Encode {
        /// Message type: a registry name (DATA, ACK, PING, PONG, PRESENCE) or number.
        #[arg(long = "type", value_name = "TYPE")]
        msg_type: MessageType,
        /// Sequence number.
        #[arg(long, default_value_t = 0)]
        seq: u32,
        /// Write binary bytes instead of hex.
        #[arg(long)]
        raw: bool,
    },
}

pub(super) fn run(cmd: FrameCommand) -> ExitCode {
    match cmd {
        FrameCommand::Decode {
            raw,
            json,
            max_payload,
        } => decode(raw, json, FrameLimits { max_payload }),
        FrameCommand::Encode { msg_type, seq, raw } => encode(msg_type, seq, raw),
    }
}

fn read_stdin() -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    io::stdin().read_to_end(&mut input)?;
    Ok(input)
}

/// The variant name of a frame error, as spec/01-wire.md lists it.
fn error_name(e: &FrameError) -> &'static str {
    match e {
        FrameError::Truncated { .. } => "Truncated",
        FrameError::BadMagic { .. } => "BadMagic",
        FrameError::UnsupportedVersion { .. } => "UnsupportedVersion",
        FrameError::UnknownType { .. } => "UnknownType",
        FrameError::PayloadTooLong { .. } => "PayloadTooLong",
        FrameError::CrcMismatch { .. } => "CrcMismatch",
        FrameError::ReservedNotZero { .. } => "ReservedNotZero",
        FrameError::TrailingBytes { .. } => "TrailingBytes",
        _ => "FrameError",
    }
}

fn decode(raw: bool, json: bool, limits: FrameLimits) -> ExitCode {
    let input = match read_stdin() {
        Ok(i) => i,
        Err(e) => return fail(json, "Io", &format!("reading stdin: {e}"), 2),
    };
    let bytes = if raw {
        input
    } else {
        let text: String = String::from_utf8_lossy(&input).split_whitespace().collect();
        match hex::decode(&text) {
            Ok(b) => b,
            Err(e) => return fail(json, "BadHex", &format!("input is not hex: {e}"), 2),
        }
    };
    match decode_exact(&bytes, &limits) {
        Ok(frame) => {
            print_frame(&frame, json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(json, error_name(&e), &e.to_string(), 1),
    }
}

fn print_frame(f: &FrameRef<'_>, json: bool) {
    let h = &f.header;
    const PREVIEW: usize = 64;
    let preview = hex::encode(&f.payload[..f.payload.len().min(PREVIEW)]);
    if json {
        let v = json!({
            "type": h.msg_type.name(),
            "type_code": h.msg_type.to_u16(),
            "seq": h.seq,
            "length": h.payload_len,
            "crc32": format!("0x{:08x}", h.crc32),
            "payload_hex": hex::encode(f.payload),
        });
        println!("{v}");
    } else {
        println!("type      {} (0x{:04x})", h.msg_type, h.msg_type.to_u16());
        println!("sequence  {}", h.seq);
        println!("length    {} bytes", h.payload_len);
        println!("crc32     0x{:08x} (ok)", h.crc32);
        let more = if f.payload.len() > PREVIEW { "…" } else { "" };
        println!("payload   {preview}{more}");
    }
}

fn fail(json: bool, kind: &str, message: &str, code: u8) -> ExitCode {
    if json {
        println!("{}", json!({ "error": kind, "message": message }));
    }
    eprintln!("error: {kind}: {message}");
    ExitCode::from(code)
}

fn encode(msg_type: MessageType, seq: u32, raw: bool) -> ExitCode {
    let payload = match read_stdin() {
        Ok(p) => p,
        Err(e) => return fail(false, "Io", &format!("reading stdin: {e}"), 2),
    };
    let mut out = BytesMut::new();
    if let Err(e) = encode_frame(msg_type, seq, &payload, &FrameLimits::default(), &mut out) {
        return fail(false, "PayloadTooLong", &e.to_string(), 1);
    }
    let mut stdout = io::stdout().lock();
    let written = if raw {
        stdout.write_all(&out)
    } else {
        writeln!(stdout, "{}", hex::encode(&out))
    };
    match written.and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(false, "Io", &format!("writing stdout: {e}"), 2),
    }
}
