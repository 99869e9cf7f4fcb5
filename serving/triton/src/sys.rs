//! The subset of Triton's C API (`tritonserver.h`, `tritonbackend.h` in
//! triton-inference-server/core) this backend uses, declared by hand: the API is stable C
//! and the symbols are resolved against the `tritonserver` process that loads us.
#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

use std::ffi::{c_char, c_void};

/// The TRITONBACKEND API version this backend is written against. Triton accepts a
/// backend whose major version equals its own and whose minor version is not newer.
pub const API_VERSION_MAJOR: u32 = 1;
pub const API_VERSION_MINOR: u32 = 19;

#[repr(C)]
pub struct TRITONSERVER_Error {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONSERVER_Message {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_Backend {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_Model {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_ModelInstance {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_Request {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_Response {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_Input {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRITONBACKEND_Output {
    _p: [u8; 0],
}

/// `TRITONSERVER_DataType` (C enum, values in declaration order).
pub type DataType = u32;
pub const TYPE_BOOL: DataType = 1;
pub const TYPE_UINT8: DataType = 2;
pub const TYPE_UINT32: DataType = 4;
pub const TYPE_UINT64: DataType = 5;
pub const TYPE_INT32: DataType = 8;
pub const TYPE_INT64: DataType = 9;
pub const TYPE_FP32: DataType = 11;

/// `TRITONSERVER_Error_Code`.
pub type ErrorCode = u32;
pub const ERROR_INTERNAL: ErrorCode = 1;
pub const ERROR_NOT_FOUND: ErrorCode = 2;
pub const ERROR_INVALID_ARG: ErrorCode = 3;
pub const ERROR_UNAVAILABLE: ErrorCode = 4;

/// `TRITONSERVER_MemoryType`.
pub type MemoryType = u32;
pub const MEMORY_CPU: MemoryType = 0;
pub const MEMORY_CPU_PINNED: MemoryType = 1;

/// `TRITONSERVER_InstanceGroupKind`.
pub type InstanceGroupKind = u32;
pub const INSTANCEGROUPKIND_GPU: InstanceGroupKind = 2;

/// `TRITONSERVER_LogLevel`.
pub type LogLevel = u32;
pub const LOG_INFO: LogLevel = 0;
pub const LOG_WARN: LogLevel = 1;
pub const LOG_ERROR: LogLevel = 2;
pub const LOG_VERBOSE: LogLevel = 3;

/// `TRITONBACKEND_ArtifactType`.
pub type ArtifactType = u32;
pub const ARTIFACT_FILESYSTEM: ArtifactType = 0;

/// `TRITONSERVER_RESPONSE_COMPLETE_FINAL`.
pub const RESPONSE_COMPLETE_FINAL: u32 = 1;
/// `TRITONSERVER_REQUEST_RELEASE_ALL`.
pub const REQUEST_RELEASE_ALL: u32 = 1;

pub type Err = *mut TRITONSERVER_Error;

extern "C" {
    pub fn TRITONSERVER_ErrorNew(code: ErrorCode, msg: *const c_char) -> Err;
    pub fn TRITONSERVER_ErrorDelete(error: Err);
    pub fn TRITONSERVER_ErrorMessage(error: Err) -> *const c_char;
    pub fn TRITONSERVER_LogIsEnabled(level: LogLevel) -> bool;
    pub fn TRITONSERVER_LogMessage(
        level: LogLevel,
        filename: *const c_char,
        line: i32,
        msg: *const c_char,
    ) -> Err;
    pub fn TRITONSERVER_MessageSerializeToJson(
        message: *mut TRITONSERVER_Message,
        base: *mut *const c_char,
        byte_size: *mut usize,
    ) -> Err;
    pub fn TRITONSERVER_MessageDelete(message: *mut TRITONSERVER_Message) -> Err;

    pub fn TRITONBACKEND_ApiVersion(major: *mut u32, minor: *mut u32) -> Err;

    pub fn TRITONBACKEND_ModelName(
        model: *mut TRITONBACKEND_Model,
        name: *mut *const c_char,
    ) -> Err;
    pub fn TRITONBACKEND_ModelVersion(model: *mut TRITONBACKEND_Model, version: *mut u64) -> Err;
    pub fn TRITONBACKEND_ModelRepository(
        model: *mut TRITONBACKEND_Model,
        artifact_type: *mut ArtifactType,
        location: *mut *const c_char,
    ) -> Err;
    pub fn TRITONBACKEND_ModelConfig(
        model: *mut TRITONBACKEND_Model,
        config_version: u32,
        config: *mut *mut TRITONSERVER_Message,
    ) -> Err;
    pub fn TRITONBACKEND_ModelState(
        model: *mut TRITONBACKEND_Model,
        state: *mut *mut c_void,
    ) -> Err;
    pub fn TRITONBACKEND_ModelSetState(model: *mut TRITONBACKEND_Model, state: *mut c_void) -> Err;

    pub fn TRITONBACKEND_ModelInstanceName(
        instance: *mut TRITONBACKEND_ModelInstance,
        name: *mut *const c_char,
    ) -> Err;
    pub fn TRITONBACKEND_ModelInstanceKind(
        instance: *mut TRITONBACKEND_ModelInstance,
        kind: *mut InstanceGroupKind,
    ) -> Err;
    pub fn TRITONBACKEND_ModelInstanceModel(
        instance: *mut TRITONBACKEND_ModelInstance,
        model: *mut *mut TRITONBACKEND_Model,
    ) -> Err;
    pub fn TRITONBACKEND_ModelInstanceState(
        instance: *mut TRITONBACKEND_ModelInstance,
        state: *mut *mut c_void,
    ) -> Err;
    pub fn TRITONBACKEND_ModelInstanceSetState(
        instance: *mut TRITONBACKEND_ModelInstance,
        state: *mut c_void,
    ) -> Err;
    pub fn TRITONBACKEND_ModelInstanceReportStatistics(
        instance: *mut TRITONBACKEND_ModelInstance,
        request: *mut TRITONBACKEND_Request,
        success: bool,
        exec_start_ns: u64,
        compute_start_ns: u64,
        compute_end_ns: u64,
        exec_end_ns: u64,
    ) -> Err;
    pub fn TRITONBACKEND_ModelInstanceReportBatchStatistics(
        instance: *mut TRITONBACKEND_ModelInstance,
        batch_size: u64,
        exec_start_ns: u64,
        compute_start_ns: u64,
        compute_end_ns: u64,
        exec_end_ns: u64,
    ) -> Err;

    pub fn TRITONBACKEND_RequestInput(
        request: *mut TRITONBACKEND_Request,
        name: *const c_char,
        input: *mut *mut TRITONBACKEND_Input,
    ) -> Err;
    pub fn TRITONBACKEND_RequestOutputCount(
        request: *mut TRITONBACKEND_Request,
        count: *mut u32,
    ) -> Err;
    pub fn TRITONBACKEND_RequestOutputName(
        request: *mut TRITONBACKEND_Request,
        index: u32,
        name: *mut *const c_char,
    ) -> Err;
    pub fn TRITONBACKEND_RequestRelease(request: *mut TRITONBACKEND_Request, flags: u32) -> Err;

    pub fn TRITONBACKEND_InputProperties(
        input: *mut TRITONBACKEND_Input,
        name: *mut *const c_char,
        datatype: *mut DataType,
        shape: *mut *const i64,
        dims_count: *mut u32,
        byte_size: *mut u64,
        buffer_count: *mut u32,
    ) -> Err;
    pub fn TRITONBACKEND_InputBuffer(
        input: *mut TRITONBACKEND_Input,
        index: u32,
        buffer: *mut *const c_void,
        buffer_byte_size: *mut u64,
        memory_type: *mut MemoryType,
        memory_type_id: *mut i64,
    ) -> Err;

    pub fn TRITONBACKEND_ResponseNew(
        response: *mut *mut TRITONBACKEND_Response,
        request: *mut TRITONBACKEND_Request,
    ) -> Err;
    pub fn TRITONBACKEND_ResponseOutput(
        response: *mut TRITONBACKEND_Response,
        output: *mut *mut TRITONBACKEND_Output,
        name: *const c_char,
        datatype: DataType,
        shape: *const i64,
        dims_count: u32,
    ) -> Err;
    pub fn TRITONBACKEND_OutputBuffer(
        output: *mut TRITONBACKEND_Output,
        buffer: *mut *mut c_void,
        buffer_byte_size: u64,
        memory_type: *mut MemoryType,
        memory_type_id: *mut i64,
    ) -> Err;
    /// Does not take ownership of `error`.
    pub fn TRITONBACKEND_ResponseSend(
        response: *mut TRITONBACKEND_Response,
        send_flags: u32,
        error: Err,
    ) -> Err;
}
