//! Images as calibration samples: PNG and JPEG files decoded, resized, cropped, normalised and
//! laid out the way the model's image input expects, one file per sample.
//!
//! The steps, in order (the torchvision evaluation transform with the default settings plus
//! `--crop-ratio 0.875`):
//! 1. decode to RGB (or grey for a one-channel input), 8 or 16 bits per channel, as floats in
//!    `[0, 1]`;
//! 2. `center-crop`: scale so that the image covers `size / crop_ratio` (shorter side first),
//!    with a bilinear filter that averages when shrinking, then cut the centre `size` out;
//!    `stretch`: scale each axis to `size`. An image already of the target size is not resampled;
//! 3. `value · pixel_max`, minus `mean`, divided by `std`, per channel (`pixel_max` 1 or 255);
//! 4. channels in RGB or BGR order, laid out NCHW or NHWC as the input's shape says.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ImageBuffer, ImageReader, Pixel};

use super::array::{Elem, InputSpec};

/// How image files become input tensors (`--image-*`, `--mean`, `--std`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageOptions {
    /// Height and width; `None`: the input's own (static) spatial dims.
    pub size: Option<(usize, usize)>,
    pub resize: Resize,
    /// `center-crop` covers `size / crop_ratio` before cutting `size` out (0.875: 256 → 224).
    pub crop_ratio: f32,
    /// Pixel values before normalising: 1 (`[0, 1]`) or 255 (`[0, 255]`).
    pub pixel_max: f32,
    /// One value for every channel, or one per channel (in the input's channel order).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub bgr: bool,
    /// `None`: from the input's shape (the axis of size 1 or 3).
    pub layout: Option<Layout>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            size: None,
            resize: Resize::CenterCrop,
            crop_ratio: 1.0,
            pixel_max: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
            bgr: false,
            layout: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    CenterCrop,
    Stretch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Whether `path` is an image file onnx-quant reads (by extension).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

/// How images feed one model input, checked once against its shape.
#[derive(Clone, Debug)]
pub struct ImagePlan {
    pub options: ImageOptions,
    /// Images per sample: the input's static batch size, else 1.
    pub batch: usize,
    pub layout: Layout,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImagePlan {
    /// The plan for `spec`, or why images cannot feed it.
    // Long by design: each check of the input against the image options is a few lines and
    // names what does not fit (type, rank, layout, channels, size, mean/std lengths).
    pub fn new(spec: &InputSpec, options: &ImageOptions) -> Result<ImagePlan, String> {
        let dims = &spec.dims;
        let shape = || {
            let d: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".into(), |v| v.to_string()))
                .collect();
            format!("[{}]", d.join(","))
        };
        if !matches!(spec.elem, Elem::F32 | Elem::F16 | Elem::F64) || dims.len() != 4 {
            return Err(format!(
                "images feed a float input of rank 4 (NCHW or NHWC); input `{}` is {} {}",
                spec.name,
                spec.elem.name(),
                shape()
            ));
        }
        let is_channels = |d: Option<usize>| matches!(d, Some(1 | 3));
        let layout = match options.layout {
            Some(l) => l,
            None if is_channels(dims[1]) => Layout::Nchw,
            None if is_channels(dims[3]) => Layout::Nhwc,
            None => {
                return Err(format!(
                    "cannot tell the channel axis of input `{}` {}: no axis 1 or 3 of size 1 or 3; give --image-layout",
                    spec.name,
                    shape()
                ));
            }
        };
        let (c, h, w) = match layout {
            Layout::Nchw => (dims[1], dims[2], dims[3]),
            Layout::Nhwc => (dims[3], dims[1], dims[2]),
        };
        let channels = c.filter(|&c| c == 1 || c == 3).ok_or_else(|| {
            format!(
                "input `{}` {} has {} channels in {layout:?} layout; images give 1 or 3",
                spec.name,
                shape(),
                c.map_or("?".into(), |c| c.to_string())
            )
        })?;
        let (height, width) = match (options.size, h, w) {
            (Some((sh, sw)), h, w) if h.is_some_and(|h| h != sh) || w.is_some_and(|w| w != sw) => {
                return Err(format!(
                    "--image-size {sh}x{sw} does not fit input `{}` {}",
                    spec.name,
                    shape()
                ));
            }
            (Some(size), _, _) => size,
            (None, Some(h), Some(w)) => (h, w),
            (None, ..) => {
                return Err(format!(
                    "input `{}` {} has symbolic height or width: give --image-size HxW",
                    spec.name,
                    shape()
                ));
            }
        };
        for (what, v) in [("--mean", &options.mean), ("--std", &options.std)] {
            if v.len() != 1 && v.len() != channels {
                let or = if channels > 1 {
                    format!(" or {channels}")
                } else {
                    String::new()
                };
                return Err(format!(
                    "{what} gives {} values for an input of {channels} channel(s): give 1{or}",
                    v.len()
                ));
            }
        }
        Ok(ImagePlan {
            options: options.clone(),
            batch: dims[0].unwrap_or(1).max(1),
            layout,
            channels,
            height,
            width,
        })
    }

    /// One sample's shape: `batch` images.
    pub fn shape(&self) -> Vec<usize> {
        match self.layout {
            Layout::Nchw => vec![self.batch, self.channels, self.height, self.width],
            Layout::Nhwc => vec![self.batch, self.height, self.width, self.channels],
        }
    }

    /// Decodes and preprocesses one image: float32 values of one batch item.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, String> {
        let img = ImageReader::open(path)
            .map_err(|e| e.to_string())?
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .decode()
            .map_err(|e| format!("not a readable image: {e}"))?;
        if self.channels == 1 {
            self.lay_out(&self.fit(img.to_luma32f()))
        } else {
            self.lay_out(&self.fit(img.to_rgb32f()))
        }
    }

    /// Resizes and crops to `height` × `width`.
    fn fit<P>(&self, img: ImageBuffer<P, Vec<f32>>) -> ImageBuffer<P, Vec<f32>>
    where
        P: Pixel<Subpixel = f32> + 'static,
    {
        let (h, w) = (img.height() as f64, img.width() as f64);
        let (th, tw) = (self.height as u32, self.width as u32);
        let (rh, rw) = match self.options.resize {
            Resize::Stretch => (th, tw),
            Resize::CenterCrop => {
                let r = f64::from(self.options.crop_ratio);
                let s = (f64::from(th) / (r * h)).max(f64::from(tw) / (r * w));
                let (rh, rw) = ((h * s).round() as u32, (w * s).round() as u32);
                (rh.max(th), rw.max(tw))
            }
        };
        let resized = if (rh, rw) == (img.height(), img.width()) {
            img
        } else {
            imageops::resize(&img, rw, rh, FilterType::Triangle)
        };
        if (rh, rw) == (th, tw) {
            return resized;
        }
        let offset = |d: u32| (f64::from(d) / 2.0).round_ties_even() as u32;
        let (top, left) = (offset(rh - th), offset(rw - tw));
        imageops::crop_imm(&resized, left, top, tw, th).to_image()
    }

    /// Normalises and lays out `img` (already `height` × `width`).
    fn lay_out<P>(&self, img: &ImageBuffer<P, Vec<f32>>) -> Result<Vec<f32>, String>
    where
        P: Pixel<Subpixel = f32>,
    {
        let o = &self.options;
        let (c, hw) = (self.channels, self.height * self.width);
        let at = |v: &[f32], k: usize| if v.len() == 1 { v[0] } else { v[k] };
        let mut out = vec![0f32; c * hw];
        for (i, p) in img.pixels().enumerate() {
            let px = p.channels();
            for k in 0..c {
                let from = if o.bgr { c - 1 - k } else { k };
                let v = (px[from] * o.pixel_max - at(&o.mean, k)) / at(&o.std, k);
                let j = match self.layout {
                    Layout::Nchw => k * hw + i,
                    Layout::Nhwc => i * c + k,
                };
                out[j] = v;
            }
        }
        Ok(out)
    }
}

/// Width and height from the file's header, without decoding it.
pub fn dimensions(path: &Path) -> Result<(u32, u32), String> {
    ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_dimensions()
        .map_err(|e| format!("not a readable image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dims: &[Option<usize>]) -> InputSpec {
        InputSpec::f32_for_test(dims)
    }

    #[test]
    fn the_layout_and_size_come_from_the_input() {
        let o = ImageOptions::default();
        let p = ImagePlan::new(&spec(&[None, Some(3), Some(224), Some(200)]), &o).unwrap();
        assert_eq!(
            (p.layout, p.channels, p.height, p.width),
            (Layout::Nchw, 3, 224, 200)
        );
        assert_eq!(p.shape(), vec![1, 3, 224, 200]);
        let p = ImagePlan::new(&spec(&[Some(1), Some(32), Some(32), Some(1)]), &o).unwrap();
        assert_eq!((p.layout, p.channels), (Layout::Nhwc, 1));
        let e = ImagePlan::new(&spec(&[None, Some(3), None, None]), &o).unwrap_err();
        assert!(e.contains("--image-size"), "{e}");
        let sized = ImageOptions {
            size: Some((64, 48)),
            ..o.clone()
        };
        let p = ImagePlan::new(&spec(&[None, Some(3), None, None]), &sized).unwrap();
        assert_eq!((p.height, p.width), (64, 48));
        let e = ImagePlan::new(&spec(&[None, Some(3), Some(32), Some(32)]), &sized).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        let p = ImagePlan::new(&spec(&[Some(8), Some(3), Some(32), Some(32)]), &o).unwrap();
        assert_eq!(p.shape(), vec![8, 3, 32, 32]);
        let e = ImagePlan::new(&spec(&[None, Some(5), Some(32), Some(32)]), &o).unwrap_err();
        assert!(e.contains("channel axis"), "{e}");
        let two_means = ImageOptions {
            mean: vec![0.5, 0.5],
            ..o
        };
        let e = ImagePlan::new(&spec(&[None, Some(3), Some(8), Some(8)]), &two_means).unwrap_err();
        assert!(e.contains("--mean gives 2 values"), "{e}");
    }

    /// 2 × 3 RGB image through normalisation, BGR order and both layouts, no resampling.
    #[test]
    fn pixels_are_normalised_and_laid_out() {
        let img = ImageBuffer::from_fn(3, 2, |x, y| {
            image::Rgb([x as f32 / 4.0, y as f32 / 2.0, 0.5])
        });
        let mut plan = ImagePlan::new(
            &spec(&[None, Some(3), Some(2), Some(3)]),
            &ImageOptions {
                pixel_max: 255.0,
                mean: vec![10.0, 20.0, 30.0],
                std: vec![2.0],
                bgr: true,
                ..ImageOptions::default()
            },
        )
        .unwrap();
        let nchw = plan.lay_out(&plan.fit(img.clone())).unwrap();
        // channel 0 is blue (0.5 everywhere): (127.5 - 10) / 2
        assert_eq!(&nchw[0..6], &[58.75; 6]);
        // channel 2 is red, x / 4 along each row: (255 x / 4 - 30) / 2
        assert_eq!(nchw[12..15], [-15.0, 16.875, 48.75]);
        plan.layout = Layout::Nhwc;
        let nhwc = plan.lay_out(&plan.fit(img)).unwrap();
        // pixel (x 1, y 1): blue, green (y / 2 = 0.5: (127.5 - 20) / 2), red
        assert_eq!(nhwc[12..15], [58.75, 53.75, 16.875]);
    }

    /// A flat image stays flat through any resize; the crop keeps the centre.
    #[test]
    fn resizing_and_cropping_keep_the_centre() {
        // 40 wide, 20 high: left half 0, right half 1
        let img =
            ImageBuffer::from_fn(40, 20, |x, _| image::Luma([if x < 20 { 0.0 } else { 1.0 }]));
        let crop = |ratio: f32| {
            let p = ImagePlan::new(
                &spec(&[None, Some(1), Some(10), Some(10)]),
                &ImageOptions {
                    crop_ratio: ratio,
                    ..ImageOptions::default()
                },
            )
            .unwrap();
            p.lay_out(&p.fit(img.clone())).unwrap()
        };
        // scaled to 20 x 10, centre 10 x 10: columns 5..15 of 20, the edge in the middle
        let v = crop(1.0);
        assert_eq!(v.len(), 100);
        assert!(v[0] < 0.01 && v[9] > 0.99, "{v:?}");
        // a 0.5 ratio covers 40 x 20 and keeps columns 15..25: still split in the middle
        let v = crop(0.5);
        assert!(
            v[0] < 0.01 && v[9] > 0.99 && (v[4] - v[5]).abs() > 0.9,
            "{v:?}"
        );
        let flat = ImageBuffer::from_pixel(37, 23, image::Luma([0.25f32]));
        let p = ImagePlan::new(
            &spec(&[None, Some(1), Some(16), Some(16)]),
            &ImageOptions {
                resize: Resize::Stretch,
                ..ImageOptions::default()
            },
        )
        .unwrap();
        let v = p.lay_out(&p.fit(flat)).unwrap();
        assert!(v.iter().all(|&x| (x - 0.25).abs() < 1e-6), "{v:?}");
    }
}
