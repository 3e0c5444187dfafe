/* Configuration: YAML file + BEARBNB_* environment + CLI (host-internal).
 * The file is flattened to dotted keys ("breaker.window"); a key's
 * environment name is BEARBNB_ + the key upper-cased with '.' -> '_'.
 * Precedence: CLI > environment > file > default. Unknown keys are errors. */
#ifndef BNB_CONFIG_H
#define BNB_CONFIG_H

#include "bnb_plugin.h"

#include <stddef.h>

typedef struct bnb_config bnb_config_t;

typedef struct bnb_config_key {
    char *key;
    bnb_cfg_type_t type;
    char *def;
} bnb_config_key_t;

bnb_config_t *bnb__config_new(void);
void bnb__config_free(bnb_config_t *c);
/* Parse a YAML file; errors name the file and line. */
int bnb__config_load_file(bnb_config_t *c, const char *path, char *err, size_t errlen);
/* Set from code (CLI flags); origin such as "--listen". */
int bnb__config_set(bnb_config_t *c, const char *key, const char *value, const char *origin);
/* Declare a key (host keys, plugin keys as "<plugin>.<key>"). */
int bnb__config_declare(bnb_config_t *c, const char *key, bnb_cfg_type_t type, const char *def);
/* Declare the host's own keys. */
/* The i-th host key (its name, type, default or NULL, one-line help); -1 past the end. */
int bnb__config_host_key(size_t i, const char **key, bnb_cfg_type_t *type, const char **def, const char **help);
int bnb__config_declare_host(bnb_config_t *c);
/* Apply BEARBNB_* variables of `envp` for declared keys (the command line
 * still wins), then check: every file key declared, every BEARBNB_* variable
 * known, every value of the right type. Keys and variables of the plugins
 * named in `skip_plugins` (installed here but not loaded: a shared ConfigMap)
 * are ignored. The first problem goes to err. */
int bnb__config_finish(bnb_config_t *c, char *const *envp, const char *const *skip_plugins, char *err, size_t errlen);

/* Values: default applied; NULL when no value and no default. */
const char *bnb__config_str(bnb_config_t *c, const char *key);
long bnb__config_int(bnb_config_t *c, const char *key);
int bnb__config_bool(bnb_config_t *c, const char *key);
/* Where the value came from ("file.yaml:12", "BEARBNB_X", "--listen", "default"). */
const char *bnb__config_origin(bnb_config_t *c, const char *key);
/* Environment name of a key (static buffer per thread). */
const char *bnb__config_env_name(const char *key);
/* Every key with `prefix.` set in the file/env/cli: fn(key, value). */
void bnb__config_each(bnb_config_t *c, void (*fn)(const char *key, const char *value, void *ud), void *ud);

#endif
