//! `view_image` (Codex: `codex-rs/core/src/tools/handlers/view_image.rs`): puts a local image in front of the
//! model. The output is a content-item array with a data URL, not text —
//! that is how the image reaches the model. Images are resized to fit
//! 2048×2048 unless `detail: "original"`; PNG and JPEG within bounds are sent
//! as they are.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use image::{GenericImageView as _, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ToolContext, ToolOutcome, parse_arguments};
use crate::sandbox::job::{ConfinedJob, Job};

/// Longest side after resizing.
pub const MAX_SIDE: u32 = 2048;
/// Larger files are refused before decoding.
pub const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Decoding refuses images wider or taller than this, so a small file that
/// decompresses to gigabytes cannot exhaust memory.
const MAX_DECODED_SIDE: u32 = 16_384;
const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;
const JPEG_QUALITY: u8 = 85;

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ViewImageParams {
    pub path: String,
    pub detail: Option<String>,
}

/// An image ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedImage {
    pub mime: &'static str,
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl EncodedImage {
    pub fn data_url(&self) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
        format!("data:{};base64,{encoded}", self.mime)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image file is too large ({size} bytes; the limit is {MAX_FILE_BYTES} bytes)")]
    TooLarge { size: u64 },
    #[error("{0}")]
    Image(#[from] image::ImageError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    let params: ViewImageParams = match parse_arguments(arguments) {
        Ok(params) => params,
        Err(text) => return ToolOutcome::failure(text),
    };
    let original = match params.detail.as_deref() {
        None => false,
        Some("original") => true,
        Some(other) => {
            return ToolOutcome::failure(format!(
                "view_image.detail only supports `original`; omit `detail` for default resized behavior, got `{other}`"
            ));
        }
    };
    let path = ctx.cwd.join(&params.path);
    // Checked first, so the answer says nothing about paths outside.
    match ctx.workspace.resolve_existing(ctx.cwd, &path) {
        Err(err) if err.is_denied() => return ToolOutcome::failure(err.to_string()),
        _ => {}
    }
    let job = ViewImageJob { path, original };
    // Under a sandbox the image is read confined, seeing what a sandboxed
    // command would: no other process's /proc, no hidden path.
    let loaded = match ctx.sandbox.confinement() {
        Some(confinement) => ctx
            .executor
            .run_job("view_image", job, ctx.cwd, &confinement)
            .await
            .map_err(|err| format!("execution error: {err}")),
        None => tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|err| format!("execution error: {err}")),
    };
    let image = match loaded {
        Ok(Ok(image)) => image,
        Ok(Err(text)) | Err(text) => return ToolOutcome::failure(text),
    };
    let detail = if original { "original" } else { "high" };
    let item = json!({
        "type": "input_image",
        "image_url": image.data_url,
        "detail": detail,
    });
    ToolOutcome {
        text: format!(
            "[image {} {}x{}, {} bytes, detail {detail}]",
            image.mime, image.width, image.height, image.bytes
        ),
        items: Some(vec![item]),
        success: true,
        command: None,
        sandbox_denied: false,
    }
}

/// Reads an image and makes it ready for the model.
#[derive(Debug, Serialize, Deserialize)]
pub struct ViewImageJob {
    path: PathBuf,
    original: bool,
}

/// A [`ViewImageJob`]'s image: what the output item and its description
/// need.
#[derive(Debug, Serialize, Deserialize)]
pub struct PromptImage {
    mime: String,
    data_url: String,
    width: u32,
    height: u32,
    /// The encoded image's size.
    bytes: usize,
}

impl ConfinedJob for ViewImageJob {
    type Output = Result<PromptImage, String>;

    fn run(self) -> Self::Output {
        let path = self.path;
        let metadata = std::fs::metadata(&path)
            .map_err(|err| format!("unable to locate image at `{}`: {err}", path.display()))?;
        if !metadata.is_file() {
            return Err(format!("image path `{}` is not a file", path.display()));
        }
        let image = load_for_prompt(&path, self.original)
            .map_err(|err| format!("unable to process image at `{}`: {err}", path.display()))?;
        Ok(PromptImage {
            mime: image.mime.to_string(),
            data_url: image.data_url(),
            width: image.width,
            height: image.height,
            bytes: image.bytes.len(),
        })
    }

    fn into_job(self) -> Job {
        Job::ViewImage(self)
    }
}

/// Reads and, unless `original`, shrinks an image to fit [`MAX_SIDE`].
pub fn load_for_prompt(path: &Path, original: bool) -> Result<EncodedImage, ImageError> {
    let size = std::fs::metadata(path)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ImageError::TooLarge { size });
    }
    let bytes = std::fs::read(path)?;
    encode_for_prompt(bytes, original)
}

/// The bytes of an image file, made ready for the model.
pub fn encode_for_prompt(bytes: Vec<u8>, original: bool) -> Result<EncodedImage, ImageError> {
    let mut reader = ImageReader::new(Cursor::new(&bytes)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let format = reader.format();
    let decoded = reader.decode()?;
    let (width, height) = decoded.dimensions();
    let fits = width <= MAX_SIDE && height <= MAX_SIDE;
    // Sent as they are: the model API takes these formats.
    let passthrough = match format {
        Some(ImageFormat::Png) => Some("image/png"),
        Some(ImageFormat::Jpeg) => Some("image/jpeg"),
        Some(ImageFormat::WebP) => Some("image/webp"),
        Some(ImageFormat::Gif) => Some("image/gif"),
        _ => None,
    };
    if let Some(mime) = passthrough
        && (fits || original)
    {
        return Ok(EncodedImage {
            mime,
            bytes,
            width,
            height,
        });
    }
    let image = if fits || original {
        decoded
    } else {
        decoded.resize(MAX_SIDE, MAX_SIDE, image::imageops::FilterType::Triangle)
    };
    let mut out = Cursor::new(Vec::new());
    let mime = if format == Some(ImageFormat::Jpeg) {
        let rgb = image.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
            .encode_image(&rgb)?;
        "image/jpeg"
    } else {
        image.to_rgba8().write_to(&mut out, ImageFormat::Png)?;
        "image/png"
    };
    Ok(EncodedImage {
        mime,
        bytes: out.into_inner(),
        width: image.width(),
        height: image.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(width, height, image::Rgba([10, 20, 30, 255]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn parses_arguments() {
        let p: ViewImageParams =
            parse_arguments(r#"{"path":"a.png","detail":"original"}"#).unwrap();
        assert_eq!(p.detail.as_deref(), Some("original"));
        let err = parse_arguments::<ViewImageParams>("{}").unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: missing field `path`"),
            "{err}"
        );
    }

    #[test]
    fn small_png_passes_through() {
        let bytes = png(64, 32);
        let got = encode_for_prompt(bytes.clone(), false).unwrap();
        assert_eq!((got.mime, got.width, got.height), ("image/png", 64, 32));
        assert_eq!(got.bytes, bytes);
        assert!(got.data_url().starts_with("data:image/png;base64,iVBOR"));
    }

    #[test]
    fn large_images_shrink_unless_original() {
        let bytes = png(4096, 1024);
        let got = encode_for_prompt(bytes.clone(), false).unwrap();
        assert_eq!((got.width, got.height), (2048, 512));
        let decoded = image::load_from_memory(&got.bytes).unwrap();
        assert_eq!(decoded.dimensions(), (2048, 512));
        let got = encode_for_prompt(bytes.clone(), true).unwrap();
        assert_eq!((got.width, got.height), (4096, 1024));
        assert_eq!(got.bytes, bytes);
    }

    #[test]
    fn garbage_and_oversized_files_are_refused() {
        let err = encode_for_prompt(b"not an image".to_vec(), false).unwrap_err();
        assert!(!err.to_string().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.png");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = load_for_prompt(&big, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "image file is too large ({} bytes; the limit is 20971520 bytes)",
                MAX_FILE_BYTES + 1
            )
        );
    }
}
