//! run_model: load a .ttfs model, run one image, print the prediction and spike counts,
//! through libttfs's C ABI. The extern "C" block is a hand-written transcription of the
//! declarations in include/ttfs.h that this program uses.
//!
//!     cargo run --release -- ../../models/mnist.ttfs ../../models/mnist-test-0.bin
//!
//! IMAGE is a raw little-endian float32 file of h*w*c values in HWC order, scaled to [0, 1].

use std::ffi::{c_char, CStr, CString};
use std::process::ExitCode;
use std::ptr;

// ---- include/ttfs.h, the parts used here ------------------------------------------------

type Status = i32; // ttfs_status; 0 = TTFS_OK
const TTFS_OK: Status = 0;
const TTFS_LAYER_INPUT: i32 = 1;
const TTFS_LAYER_CONV2D: i32 = 2;
const TTFS_LAYER_DENSE: i32 = 5;
const TTFS_BACKEND_AUTO: i32 = 0;
const TTFS_ENGINE_ANALYTIC: i32 = 1;
const TTFS_ABI_VERSION: i32 = 1;

#[repr(C)]
struct Model {
    _opaque: [u8; 0],
}
#[repr(C)]
struct Session {
    _opaque: [u8; 0],
}

/// ttfs_layer_info, field for field.
#[repr(C)]
struct LayerInfo {
    struct_size: u32,
    kind: i32,
    depth: i32,
    shape: [i32; 3],
    kernel: [i32; 2],
    stride: [i32; 2],
    padding: i32,
    pool_mode: i32,
    tau_fire: f32,
    td_fire: f32,
    tau_integ: f32,
    td_integ: f32,
    vth0: f32,
    integ_window: [i32; 2],
    fire_window: [i32; 2],
    name: *const c_char,
}

extern "C" {
    fn ttfs_abi_version() -> i32;
    fn ttfs_status_name(status: i32) -> *const c_char;
    fn ttfs_last_error() -> *const c_char;
    fn ttfs_model_load_file(path: *const c_char, out: *mut *mut Model) -> Status;
    fn ttfs_model_free(model: *mut Model) -> Status;
    fn ttfs_model_layer_count(model: *const Model, count: *mut i32) -> Status;
    fn ttfs_model_layer_info(model: *const Model, layer: i32, info: *mut LayerInfo) -> Status;
    fn ttfs_model_input_shape(model: *const Model, shape: *mut i32) -> Status;
    fn ttfs_model_num_classes(model: *const Model, classes: *mut i32) -> Status;
    fn ttfs_session_create(model: *const Model, backend: i32, engine: i32, max_batch: i32,
                           flags: u32, out: *mut *mut Session) -> Status;
    fn ttfs_session_free(session: *mut Session) -> Status;
    fn ttfs_session_run_f32(session: *mut Session, images: *const f32, images_len: usize, n: i32,
                            predictions: *mut i32, predictions_len: usize, potentials: *mut f32,
                            potentials_len: usize) -> Status;
    fn ttfs_session_spike_counts(session: *const Session, layer: i32, out: *mut i32,
                                 out_len: usize) -> Status;
}

// ---- Safe wrappers: a status becomes an Err with the library's words ----------------------

fn check(status: Status) -> Result<(), String> {
    if status == TTFS_OK {
        return Ok(());
    }
    // SAFETY: both return NUL-terminated strings owned by the library, never NULL.
    unsafe {
        let name = CStr::from_ptr(ttfs_status_name(status)).to_string_lossy();
        let message = CStr::from_ptr(ttfs_last_error()).to_string_lossy();
        Err(format!("{name}: {message}"))
    }
}

/// Frees the model and session when main's work is done, whichever way it ends.
struct Handles {
    model: *mut Model,
    session: *mut Session,
}

impl Drop for Handles {
    fn drop(&mut self) {
        // SAFETY: NULL or handles returned by the library, freed once; NULL is a no-op.
        unsafe {
            ttfs_session_free(self.session);
            ttfs_model_free(self.model);
        }
    }
}

fn run(model_path: &str, image_path: &str) -> Result<(), String> {
    let mut handles = Handles { model: ptr::null_mut(), session: ptr::null_mut() };
    let path = CString::new(model_path).map_err(|_| "the model path contains a NUL byte")?;
    let (mut shape, mut classes, mut layers) = ([0i32; 3], 0i32, 0i32);
    // SAFETY: every pointer passed points to live, correctly sized storage of this function.
    unsafe {
        check(ttfs_model_load_file(path.as_ptr(), &mut handles.model))?;
        check(ttfs_model_input_shape(handles.model, shape.as_mut_ptr()))?;
        check(ttfs_model_num_classes(handles.model, &mut classes))?;
        check(ttfs_model_layer_count(handles.model, &mut layers))?;
    }

    let values = shape.iter().map(|&d| d as usize).product::<usize>();
    let bytes = std::fs::read(image_path).map_err(|e| format!("{image_path}: {e}"))?;
    if bytes.len() != 4 * values {
        return Err(format!("{image_path}: {} bytes; expected {} float32 values ({}x{}x{})",
                           bytes.len(), values, shape[0], shape[1], shape[2]));
    }
    let image: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();

    let mut prediction = -1i32;
    let mut potentials = vec![0f32; classes as usize];
    // SAFETY: as above; the lengths passed are those of the Vecs.
    unsafe {
        check(ttfs_session_create(handles.model, TTFS_BACKEND_AUTO, TTFS_ENGINE_ANALYTIC, 1, 0,
                                  &mut handles.session))?;
        check(ttfs_session_run_f32(handles.session, image.as_ptr(), image.len(), 1,
                                   &mut prediction, 1, potentials.as_mut_ptr(), potentials.len()))?;
    }
    println!("prediction: {prediction}");
    let shown: Vec<String> = potentials.iter().map(|p| format_g9(*p)).collect();
    println!("potentials: {}", shown.join(" "));
    for layer in 0..layers {
        // SAFETY: a zeroed LayerInfo is valid (integers, floats, a NULL pointer).
        let mut info: LayerInfo = unsafe { std::mem::zeroed() };
        info.struct_size = std::mem::size_of::<LayerInfo>() as u32;
        let mut count = 0i32;
        unsafe {
            check(ttfs_model_layer_info(handles.model, layer, &mut info))?;
            if ![TTFS_LAYER_INPUT, TTFS_LAYER_CONV2D, TTFS_LAYER_DENSE].contains(&info.kind) {
                continue; // maxpool and flatten have no neurons
            }
            check(ttfs_session_spike_counts(handles.session, layer, &mut count, 1))?;
            // The name belongs to the model, which is alive here.
            let name = CStr::from_ptr(info.name).to_string_lossy();
            println!("spikes {name}: {count}");
        }
    }
    Ok(())
}

/// printf's %.9g for a float32: nine significant digits, which give back the exact value.
fn format_g9(value: f32) -> String {
    let v = value as f64;
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let exponent = v.abs().log10().floor() as i32;
    if (-5..9).contains(&exponent) {
        let decimals = (8 - exponent).max(0) as usize;
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
        text
    } else {
        let text = format!("{v:.8e}");
        let (mantissa, exp) = text.split_once('e').unwrap();
        let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
        let exp: i32 = exp.parse().unwrap();
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: run_model MODEL IMAGE.bin");
        return ExitCode::from(2);
    }
    // SAFETY: a plain query with no arguments.
    let abi = unsafe { ttfs_abi_version() };
    if abi != TTFS_ABI_VERSION {
        eprintln!("libttfs has ABI version {abi}, this program was written for {TTFS_ABI_VERSION}");
        return ExitCode::from(1);
    }
    match run(&args[1], &args[2]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

