/* Prometheus metrics (host-internal). Thread-safe. */
#ifndef BNB_METRICS_H
#define BNB_METRICS_H

#include <stddef.h>

typedef struct bnb_metrics bnb_metrics_t;

bnb_metrics_t *bnb__metrics_new(void);
void bnb__metrics_free(bnb_metrics_t *m);
/* One HTTP request: counter by route/method/status, duration histogram by route/method. */
void bnb__metrics_http(bnb_metrics_t *m, const char *route, const char *method, int status, double seconds);
/* The method's label: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or "other". */
const char *bnb__metrics_method_label(const char *method);
/* Escape a label value (\\, \", \n; other control bytes dropped) into out. */
void bnb__metrics_escape(char *out, size_t outlen, const char *v);
/* Counter `name` (must end in _total) with a label set such as `plugin="room"` (or NULL). */
void bnb__metrics_add(bnb_metrics_t *m, const char *name, const char *labels, double delta);
/* Gauge `name` with labels, set to `value`. */
void bnb__metrics_set(bnb_metrics_t *m, const char *name, const char *labels, double value);
/* The exposition text; caller frees with free(). */
char *bnb__metrics_render(bnb_metrics_t *m, size_t *len);

#endif
