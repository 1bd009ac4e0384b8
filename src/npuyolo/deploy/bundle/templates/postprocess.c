/* npuyolo bundle: host post-processing of the NPU head in portable C99 (see postprocess.h). */
#include "postprocess.h"

#include <math.h>
#include <string.h>

typedef struct {
    npuyolo_detection *cand;  /* candidates over conf */
    int32_t *order;           /* candidate indices, best score first */
    int32_t *scratch;         /* merge sort buffer */
    unsigned char *removed;   /* suppressed by NMS */
} workspace_t;

static int anchors_of(const npuyolo_config *cfg)
{
    int total = 0;
    for (int i = 0; i < cfg->num_strides; i++) {
        int g = cfg->imgsz / cfg->strides[i];
        total += g * g;
    }
    return total;
}

static int config_ok(const npuyolo_config *cfg)
{
    if (!cfg || cfg->imgsz <= 0 || cfg->num_strides <= 0 || cfg->num_strides > NPUYOLO_MAX_STRIDES || cfg->reg_max <= 0 ||
        cfg->reg_max > NPUYOLO_MAX_REG_MAX || cfg->num_classes <= 0 || cfg->max_det <= 0 || !(cfg->iou > 0.0f))
        return 0;
    for (int i = 0; i < cfg->num_strides; i++)
        if (cfg->strides[i] <= 0 || cfg->imgsz % cfg->strides[i] != 0)
            return 0;
    return 1;
}

static size_t align16(size_t n) { return (n + 15u) & ~(size_t)15u; }

size_t npuyolo_workspace_size(const npuyolo_config *cfg)
{
    if (!config_ok(cfg))
        return 0;
    size_t a = (size_t)anchors_of(cfg);
    return align16(a * sizeof(npuyolo_detection)) + 2 * align16(a * sizeof(int32_t)) + align16(a) + 16;
}

static float value_at(const npuyolo_tensor *t, size_t i)
{
    switch (t->dtype) {
    case NPUYOLO_INT8: return ((float)((const int8_t *)t->data)[i] - (float)t->zero_point) * t->scale;
    case NPUYOLO_UINT8: return ((float)((const uint8_t *)t->data)[i] - (float)t->zero_point) * t->scale;
    default: return ((const float *)t->data)[i];
    }
}

/* The raw element, ordered like the real value (scale > 0), to compare classes without dequantizing each one. */
static float raw_at(const npuyolo_tensor *t, size_t i)
{
    switch (t->dtype) {
    case NPUYOLO_INT8: return (float)((const int8_t *)t->data)[i];
    case NPUYOLO_UINT8: return (float)((const uint8_t *)t->data)[i];
    default: return ((const float *)t->data)[i];
    }
}

static size_t index_of(const npuyolo_tensor *t, int channels, int g, int c, int y, int x)
{
    if (t->layout == NPUYOLO_NHWC)
        return ((size_t)y * (size_t)g + (size_t)x) * (size_t)channels + (size_t)c;
    return ((size_t)c * (size_t)g + (size_t)y) * (size_t)g + (size_t)x;
}

/* Expected bin of one side's DFL distribution: softmax over reg_max logits, then the mean bin. */
static float dfl_side(const npuyolo_tensor *t, int channels, int g, int side, int reg_max, int y, int x)
{
    float v[NPUYOLO_MAX_REG_MAX];
    float top = -INFINITY, sum = 0.0f, mean = 0.0f;
    for (int b = 0; b < reg_max; b++) {
        v[b] = value_at(t, index_of(t, channels, g, side * reg_max + b, y, x));
        if (v[b] > top)
            top = v[b];
    }
    for (int b = 0; b < reg_max; b++) {
        float e = expf(v[b] - top);
        sum += e;
        mean += e * (float)b;
    }
    return mean / sum;
}

/* Stable merge sort of candidate indices by score, descending (ties keep anchor order, as numpy's stable argsort). */
static void sort_by_score(const npuyolo_detection *cand, int32_t *idx, int32_t *tmp, int n)
{
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = cand[idx[j]].score > cand[idx[i]].score ? idx[j++] : idx[i++];
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof(int32_t));
    }
}

static float iou_of(const npuyolo_detection *a, const npuyolo_detection *b)
{
    float w = fminf(a->x2, b->x2) - fmaxf(a->x1, b->x1);
    float h = fminf(a->y2, b->y2) - fmaxf(a->y1, b->y1);
    if (w <= 0.0f || h <= 0.0f)
        return 0.0f;
    float inter = w * h;
    float uni = (a->x2 - a->x1) * (a->y2 - a->y1) + (b->x2 - b->x1) * (b->y2 - b->y1) - inter;
    return uni > 0.0f ? inter / uni : 0.0f;
}

int npuyolo_postprocess(const npuyolo_config *cfg, const npuyolo_tensor *boxes, const npuyolo_tensor *scores,
                        void *workspace, size_t workspace_size, npuyolo_detection *out, int out_capacity)
{
    if (!config_ok(cfg) || !boxes || !scores || !out || out_capacity < 0)
        return NPUYOLO_EINVAL;
    if (!workspace || workspace_size < npuyolo_workspace_size(cfg))
        return NPUYOLO_EWORKSPACE;
    size_t a = (size_t)anchors_of(cfg);
    unsigned char *base = (unsigned char *)(((uintptr_t)workspace + 15u) & ~(uintptr_t)15u);
    workspace_t ws;
    ws.cand = (npuyolo_detection *)base;
    ws.order = (int32_t *)(base + align16(a * sizeof(npuyolo_detection)));
    ws.scratch = (int32_t *)((unsigned char *)ws.order + align16(a * sizeof(int32_t)));
    ws.removed = (unsigned char *)ws.scratch + align16(a * sizeof(int32_t));

    const int nc = cfg->num_classes, rm = cfg->reg_max;
    int n = 0;
    for (int s = 0; s < cfg->num_strides; s++) {
        const npuyolo_tensor *bt = &boxes[s], *ct = &scores[s];
        const int stride = cfg->strides[s], g = cfg->imgsz / stride;
        if (!bt->data || !ct->data)
            return NPUYOLO_EINVAL;
        for (int y = 0; y < g; y++) {
            for (int x = 0; x < g; x++) {
                int best = 0;
                float top = raw_at(ct, index_of(ct, nc, g, 0, y, x));
                for (int c = 1; c < nc; c++) {
                    float v = raw_at(ct, index_of(ct, nc, g, c, y, x));
                    if (v > top) {
                        top = v;
                        best = c;
                    }
                }
                float score = value_at(ct, index_of(ct, nc, g, best, y, x));
                if (cfg->class_sigmoid)
                    score = 1.0f / (1.0f + expf(-score));
                if (!(score > cfg->conf))
                    continue;
                float ax = (float)x + 0.5f, ay = (float)y + 0.5f;
                float l = dfl_side(bt, 4 * rm, g, 0, rm, y, x), t = dfl_side(bt, 4 * rm, g, 1, rm, y, x);
                float r = dfl_side(bt, 4 * rm, g, 2, rm, y, x), b = dfl_side(bt, 4 * rm, g, 3, rm, y, x);
                float x1 = ax - l, y1 = ay - t, x2 = ax + r, y2 = ay + b;
                float cx = (x1 + x2) / 2.0f * (float)stride, cy = (y1 + y2) / 2.0f * (float)stride;
                float w = (x2 - x1) * (float)stride, h = (y2 - y1) * (float)stride;
                npuyolo_detection *d = &ws.cand[n];
                d->x1 = cx - w / 2.0f;
                d->y1 = cy - h / 2.0f;
                d->x2 = cx + w / 2.0f;
                d->y2 = cy + h / 2.0f;
                d->score = score;
                d->cls = best;
                ws.order[n] = n;
                n++;
            }
        }
    }
    sort_by_score(ws.cand, ws.order, ws.scratch, n);
    memset(ws.removed, 0, (size_t)n);
    int limit = cfg->max_det < out_capacity ? cfg->max_det : out_capacity, kept = 0;
    for (int i = 0; i < n && kept < limit; i++) {
        int32_t k = ws.order[i];
        if (ws.removed[k])
            continue;
        out[kept++] = ws.cand[k];
        for (int j = i + 1; j < n; j++) {
            int32_t m = ws.order[j];
            if (!ws.removed[m] && ws.cand[m].cls == ws.cand[k].cls && iou_of(&ws.cand[k], &ws.cand[m]) > cfg->iou)
                ws.removed[m] = 1;
        }
    }
    return kept;
}

static float clampf(float v, float hi) { return v < 0.0f ? 0.0f : (v > hi ? hi : v); }

void npuyolo_unletterbox(npuyolo_detection *dets, int n, int image_w, int image_h, int imgsz)
{
    double r = (double)imgsz / image_h < (double)imgsz / image_w ? (double)imgsz / image_h : (double)imgsz / image_w;
    long nw = (long)nearbyint(image_w * r), nh = (long)nearbyint(image_h * r); /* half to even, as Python's round */
    if (nw < 1)
        nw = 1;
    if (nh < 1)
        nh = 1;
    float gx = (float)((double)nw / image_w), gy = (float)((double)nh / image_h);
    float px = (float)((imgsz - nw) / 2), py = (float)((imgsz - nh) / 2);
    for (int i = 0; i < n; i++) {
        dets[i].x1 = clampf((dets[i].x1 - px) / gx, (float)image_w);
        dets[i].x2 = clampf((dets[i].x2 - px) / gx, (float)image_w);
        dets[i].y1 = clampf((dets[i].y1 - py) / gy, (float)image_h);
        dets[i].y2 = clampf((dets[i].y2 - py) / gy, (float)image_h);
    }
}
