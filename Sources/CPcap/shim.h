#ifndef VDE_SUPERVISOR_CPCAP_SHIM_H
#define VDE_SUPERVISOR_CPCAP_SHIM_H
#include <pcap/pcap.h>
#include <dlfcn.h>
#endif
