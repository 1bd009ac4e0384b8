/* npuyolo bundle: host post-processing of the NPU head in portable C99.
 *
 * The NPU head ends at, per stride, a box tensor (4 * reg_max DFL logits per anchor) and a class tensor (class
 * probabilities, or logits where the graph stops before the sigmoid). This file turns them into detections: class
 * scores, candidates over `conf`, DFL and box decode for the candidates only, class-aware greedy NMS (suppress
 * IoU > `iou`, best score first) -- the same steps and rules as npuyolo_infer.py and Ultralytics.
 *
 * No allocation: the caller gives a workspace of npuyolo_workspace_size() bytes (static or from its own pool) and
 * an output array. Tensors are float32, or int8/uint8 with their scale and zero point (real = (q - zp) * scale),
 * in NCHW or NHWC layout, batch 1. Every value comes from manifest.json (imgsz, strides, reg_max, names, conf, iou).
 */
#ifndef NPUYOLO_POSTPROCESS_H
#define NPUYOLO_POSTPROCESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NPUYOLO_MAX_STRIDES 8
#define NPUYOLO_MAX_REG_MAX 64

typedef enum { NPUYOLO_FLOAT32 = 0, NPUYOLO_INT8 = 1, NPUYOLO_UINT8 = 2 } npuyolo_dtype;
typedef enum { NPUYOLO_NCHW = 0, NPUYOLO_NHWC = 1 } npuyolo_layout;

typedef struct {
    const void *data;      /* [1, C, g, g] (NCHW) or [1, g, g, C] (NHWC) */
    npuyolo_dtype dtype;
    npuyolo_layout layout;
    float scale;           /* int8/uint8 only */
    int32_t zero_point;    /* int8/uint8 only */
} npuyolo_tensor;

typedef struct {
    int imgsz;                          /* square input size, e.g. 320 */
    int num_strides;                    /* e.g. 3 */
    int strides[NPUYOLO_MAX_STRIDES];   /* e.g. 8, 16, 32 */
    int reg_max;                        /* DFL bins, e.g. 16 */
    int num_classes;
    int class_sigmoid;                  /* 1: class tensors hold logits (sigmoid here); 0: probabilities */
    float conf;                         /* keep scores > conf */
    float iou;                          /* suppress IoU > iou within a class */
    int max_det;                        /* at most this many detections */
} npuyolo_config;

typedef struct {
    float x1, y1, x2, y2;  /* letterbox pixels; npuyolo_unletterbox() maps them to the image */
    float score;
    int32_t cls;
} npuyolo_detection;

enum { NPUYOLO_OK = 0, NPUYOLO_EINVAL = -1, NPUYOLO_EWORKSPACE = -2 };

/* Bytes of workspace npuyolo_postprocess() needs for this configuration (0 when the configuration is invalid). */
size_t npuyolo_workspace_size(const npuyolo_config *cfg);

/* boxes[i], scores[i]: the tensors of stride cfg->strides[i]. Writes at most min(max_det, out_capacity) detections,
 * best first, and returns how many; a negative NPUYOLO_E* on a bad configuration or a workspace too small. */
int npuyolo_postprocess(const npuyolo_config *cfg, const npuyolo_tensor *boxes, const npuyolo_tensor *scores,
                        void *workspace, size_t workspace_size, npuyolo_detection *out, int out_capacity);

/* Letterbox pixels -> the original image's pixels (centred letterbox, as npuyolo_infer.py), clipped to it. */
void npuyolo_unletterbox(npuyolo_detection *dets, int n, int image_w, int image_h, int imgsz);

#ifdef __cplusplus
}
#endif

#endif /* NPUYOLO_POSTPROCESS_H */
