#ifndef VDE_SUPERVISOR_CLINUX_SHIM_H
#define VDE_SUPERVISOR_CLINUX_SHIM_H
#include <sys/prctl.h>

/// prctl is variadic, which Swift cannot call: one wrapper per use.
static inline int clinux_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}
#endif
