/* ttfs model file format, version 1: the one set of constants.
 *
 * This header is the single source of truth for the byte layout described in docs/FORMAT.md.
 * The C reader includes it; the Python writer (export/ttfs_format.py) parses the
 * `#define TTFS_FMT_* value` lines below at import time, so keep each definition on one line
 * as `#define NAME <integer literal>` or `#define NAME "string"`.
 */
#ifndef TTFS_FORMAT_H
#define TTFS_FORMAT_H

/* File header (128 bytes at offset 0). */
#define TTFS_FMT_MAGIC "TTFSNET\0"          /* 8 bytes, the last one NUL */
#define TTFS_FMT_MAGIC_SIZE 8
#define TTFS_FMT_VERSION 1
#define TTFS_FMT_HEADER_SIZE 128
#define TTFS_FMT_LAYER_RECORD_SIZE 128
#define TTFS_FMT_TENSOR_RECORD_SIZE 64
#define TTFS_FMT_ALIGNMENT 64                /* tensor data starts on multiples of this */
#define TTFS_FMT_CRC_SIZE 4                  /* zlib CRC-32 of every byte before it */
#define TTFS_FMT_NAME_SIZE 32                /* layer name field, NUL-padded UTF-8 */
#define TTFS_FMT_MAX_DIMS 4

/* Header field offsets. */
#define TTFS_FMT_H_MAGIC 0
#define TTFS_FMT_H_VERSION 8
#define TTFS_FMT_H_HEADER_SIZE 12
#define TTFS_FMT_H_FILE_SIZE 16
#define TTFS_FMT_H_LAYER_COUNT 24
#define TTFS_FMT_H_LAYER_RECORD_SIZE 28
#define TTFS_FMT_H_LAYER_TABLE_OFFSET 32
#define TTFS_FMT_H_TENSOR_COUNT 40
#define TTFS_FMT_H_TENSOR_RECORD_SIZE 44
#define TTFS_FMT_H_TENSOR_TABLE_OFFSET 48
#define TTFS_FMT_H_METADATA_OFFSET 56
#define TTFS_FMT_H_METADATA_SIZE 64
#define TTFS_FMT_H_TIME_STEPS 72
#define TTFS_FMT_H_READOUT 76
#define TTFS_FMT_H_FLAGS 80
#define TTFS_FMT_H_RESERVED 84              /* 44 bytes, all zero */

/* Layer record field offsets (128 bytes per layer). */
#define TTFS_FMT_L_NAME 0
#define TTFS_FMT_L_KIND 32
#define TTFS_FMT_L_DEPTH 36
#define TTFS_FMT_L_OUT_H 40
#define TTFS_FMT_L_OUT_W 44
#define TTFS_FMT_L_OUT_C 48
#define TTFS_FMT_L_KERNEL_H 52
#define TTFS_FMT_L_KERNEL_W 56
#define TTFS_FMT_L_STRIDE_H 60
#define TTFS_FMT_L_STRIDE_W 64
#define TTFS_FMT_L_PADDING 68
#define TTFS_FMT_L_POOL_MODE 72
#define TTFS_FMT_L_WEIGHT_TENSOR 76
#define TTFS_FMT_L_BIAS_TENSOR 80
#define TTFS_FMT_L_TAU_FIRE 84
#define TTFS_FMT_L_TD_FIRE 88
#define TTFS_FMT_L_TAU_INTEG 92
#define TTFS_FMT_L_TD_INTEG 96
#define TTFS_FMT_L_VTH0 100
#define TTFS_FMT_L_INTEG_START 104
#define TTFS_FMT_L_INTEG_END 108
#define TTFS_FMT_L_FIRE_START 112
#define TTFS_FMT_L_FIRE_END 116
#define TTFS_FMT_L_INPUT_DIVISOR 120
#define TTFS_FMT_L_RESERVED 124

/* Tensor record field offsets (64 bytes per tensor). */
#define TTFS_FMT_T_DTYPE 0
#define TTFS_FMT_T_NDIM 4
#define TTFS_FMT_T_DIMS 8                    /* 4 x u64 */
#define TTFS_FMT_T_DATA_OFFSET 40
#define TTFS_FMT_T_DATA_SIZE 48
#define TTFS_FMT_T_RESERVED 56

/* Enumerations stored in the file. The values equal the public ABI's enums in ttfs.h. */
#define TTFS_FMT_LAYER_INPUT 1
#define TTFS_FMT_LAYER_CONV2D 2
#define TTFS_FMT_LAYER_MAXPOOL 3
#define TTFS_FMT_LAYER_FLATTEN 4
#define TTFS_FMT_LAYER_DENSE 5
#define TTFS_FMT_PADDING_VALID 0
#define TTFS_FMT_PADDING_SAME 1
#define TTFS_FMT_POOL_OR 0
#define TTFS_FMT_POOL_EARLIEST 1
#define TTFS_FMT_POOL_GATED 2
#define TTFS_FMT_READOUT_VMEM 0
#define TTFS_FMT_READOUT_FIRST_SPIKE 1
#define TTFS_FMT_DTYPE_FLOAT32 1
#define TTFS_FMT_NO_TENSOR -1

/* Limits a valid file stays within (they bound memory a hostile file can make us allocate). */
#define TTFS_FMT_MAX_LAYERS 1024
#define TTFS_FMT_MAX_TENSORS 2048
#define TTFS_FMT_MAX_EXTENT 1048576          /* any one of h, w, c, kernel, stride */
#define TTFS_FMT_MAX_LAYER_SIZE 268435456    /* h*w*c of one layer (2^28) */
#define TTFS_FMT_MAX_TENSOR_ELEMENTS 268435456
#define TTFS_FMT_MAX_TIME_STEPS 1048576
#define TTFS_FMT_MAX_METADATA_SIZE 16777216
#define TTFS_FMT_MAX_WINDOW_STEPS 16777216    /* all window lengths of all layers added up (2^24) */
#define TTFS_FMT_MAX_FILE_SIZE 4294967296       /* bytes of a whole file, CRC included (4 GiB) */

#endif /* TTFS_FORMAT_H */
