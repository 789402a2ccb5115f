import Testing

/// Every acceptance suite runs under this parent, one test at a time: they share taps,
/// processes and dockerd on a 2-core machine, and the Docker suite shares the real plugin
/// socket. They need root, vde2 and dockerd: run them with scripts/test.
@Suite(.serialized)
enum Acceptance {}
