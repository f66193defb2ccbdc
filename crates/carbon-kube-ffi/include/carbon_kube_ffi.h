/* The C ABI of carbon-kube-ffi (crates/carbon-kube-ffi/src/lib.rs is the
 * reference; keep the two in step). Strings and JSON go in as pointer +
 * length (UTF-8, no NUL). Functions returning int return 0 on success and -1
 * on failure, with the answer or the error message in *out, which the caller
 * frees with ck_buf_free. */
#ifndef CARBON_KUBE_FFI_H
#define CARBON_KUBE_FFI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_policy ck_policy;

typedef struct {
  uint8_t *ptr;
  size_t len;
} ck_buf;

/* One candidate node: zone handle from ck_node_zone, resources as
 * kube-scheduler accounts them this cycle. */
typedef struct {
  uint32_t zone;
  int64_t allocatable_cpu_millis;
  int64_t allocatable_memory_bytes;
  int64_t requested_cpu_millis;
  int64_t requested_memory_bytes;
} ck_node;

#define CK_ZONE_NOT_SEEN 0u
/* flags of ck_filter / ck_score: also format the debug-log line of the
 * report (summary, best); without it they are empty. */
#define CK_EXPLAIN 1u

void ck_buf_free(ck_buf buf);

ck_policy *ck_policy_new(const uint8_t *args, size_t args_len, ck_buf *err);
void ck_policy_free(ck_policy *policy);

int32_t ck_set_snapshot(const ck_policy *policy, const uint8_t *json, size_t len, ck_buf *out);
int32_t ck_set_config(const ck_policy *policy, const uint8_t *json, size_t len, ck_buf *out);
uint32_t ck_node_zone(const ck_policy *policy, const uint8_t *json, size_t len);

int32_t ck_filter(const ck_policy *policy, const uint8_t *pod, size_t pod_len,
                  const ck_node *nodes, size_t n, int64_t now, uint32_t flags,
                  uint32_t *verdicts,
                  ck_buf *out);
int32_t ck_score(const ck_policy *policy, const uint8_t *pod, size_t pod_len,
                 const ck_node *nodes, size_t n, int64_t now, uint32_t flags,
                 uint8_t *scores,
                 ck_buf *out);
int32_t ck_landing(const ck_policy *policy, const uint8_t *uid, size_t uid_len,
                   uint32_t zone, ck_buf *out);
void ck_forget(const ck_policy *policy, const uint8_t *uid, size_t uid_len);

#ifdef __cplusplus
}
#endif

#endif
