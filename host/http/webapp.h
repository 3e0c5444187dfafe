/* The web app's static files at `/` (host-internal, h2o): one directory
 * (http.web_root), served after every API route failed to match. */
#ifndef BNB_WEBAPP_H
#define BNB_WEBAPP_H

#include <h2o.h>
#include <stddef.h>

struct bnb_host;

/* Resolve the directory (http.web_root, else the source tree's web/ when the
 * program runs from its build tree, else <prefix>/share/bearbnb/web). A
 * missing directory is logged and the web app is simply not served. */
void bnb__web_init(struct bnb_host *h);
/* Frees the app's scripts and styles read into memory (host shutdown). */
void bnb__web_fini(void);
/* The resolved root, or NULL when the web app is not served. */
const char *bnb__web_root(void);
/* GET/HEAD of a path no route matched: 1 when answered here (a file, a 304,
 * index.html for a browser's navigation to an app path, a hashed script or
 * style from memory), 0 when the path is not the web app's or refused (the
 * caller answers its 404 problem). Runs on the loop: only stat/open/realpath
 * of local files (and, when one of the app's small scripts changed, reading
 * them again); a file's body is sent by h2o's file generator in bounded
 * chunks as the socket drains. */
int bnb__web_serve(struct bnb_host *h, h2o_req_t *req, const char *path, size_t plen);

#endif
