import Glibc
import Shared

/// Renders a ``StatusReport`` as aligned text tables, coloured only when asked (on a terminal).
struct StatusTable {
    let report: StatusReport
    let color: Bool
    /// One network in detail: also each external port's full description.
    let detailed: Bool

    func render() -> String {
        var out =
            "vde-supervisor pid \(report.supervisor.pid), up \(Self.duration(report.supervisor.uptimeSeconds)): "
            + report.supervisor.statusLine + "\n"
        if report.networks.isEmpty {
            return out + "no vde networks\n"
        }
        for network in report.networks {
            out += "\n"
            out += table(
                [
                    [
                        "NETWORK", "NAME", "SUBNETS", "SWITCH", "OWNER", "SWITCH PID", "WORKER", "STATE", "UPTIME",
                        "RESTARTS",
                        "LAST ERROR",
                    ],
                    [
                        network.shortID, network.name ?? "-", network.subnets.joined(separator: ",").orDash,
                        network.switch.ctlDir,
                        network.switch.ownership, network.switch.pid.map(String.init) ?? "-",
                        network.worker.pid.map(String.init) ?? "-", paint(network.worker.state),
                        network.worker.uptimeSeconds.map(Self.duration) ?? "-", String(network.worker.restarts),
                        network.worker.lastError ?? "-",
                    ],
                ], indent: "")
            if let link = network.link {
                out += "  default link of new endpoints: \(link.summary)\n"
            }
            if let mtu = network.mtu {
                out += "  mtu \(mtu)\n"
            }
            if let uplink = network.uplink {
                out += table(Self.uplinkRows(uplink, paint: paint), indent: "  ")
            }
            if network.endpoints.isEmpty {
                out += "  no endpoints\n"
            } else {
                // A DETAIL column only when some endpoint has one (why it is unreachable or gone).
                let withDetail = network.endpoints.contains { $0.detail != nil }
                var header = [
                    "ENDPOINT", "CONTAINER", "TAP", "MAC", "IP", "SANDBOX", "PORT", "SENT PKTS/BYTES",
                    "RECEIVED PKTS/BYTES",
                    "PLUG PID", "STATE", "LINK",
                ]
                if withDetail { header.append("DETAIL") }
                var rows = [header]
                for endpoint in network.endpoints {
                    let ip = [endpoint.ipv4, endpoint.ipv6].compactMap { $0 }.joined(separator: ",")
                    let sent: String = endpoint.counters.map { "\($0.inPackets)/\(Self.bytes($0.inBytes))" } ?? "-"
                    let received: String =
                        endpoint.counters.map { "\($0.outPackets)/\(Self.bytes($0.outBytes))" } ?? "-"
                    var row: [String] = [
                        endpoint.shortID, endpoint.container ?? "-", endpoint.tap, endpoint.macAddress, ip.orDash,
                        endpoint.sandbox ?? "-",
                        endpoint.switchPort.map(String.init) ?? "-", sent, received,
                        endpoint.plugPID.map(String.init) ?? "-", paint(endpoint.state),
                        endpoint.link?.short ?? "-",
                    ]
                    if withDetail { row.append(endpoint.detail ?? "-") }
                    rows.append(row)
                }
                out += table(rows, indent: "  ")
            }
            if network.switch.managementSocket == nil {
                out += "  external ports unknown: the switch has no management socket (-o management_socket=PATH)\n"
            }
            if !network.otherPorts.isEmpty {
                var rows = [["EXTERNAL PORT", "PROGRAM", "PID", "MAC", "SENT PKTS/BYTES", "RECEIVED PKTS/BYTES"]]
                if detailed { rows[0].append("PEER") }
                for port in network.otherPorts {
                    var row = [
                        String(port.port), port.program ?? "-", port.pid.map(String.init) ?? "-",
                        (port.macAddresses ?? []).joined(separator: ",").orDash,
                        "\(port.counters.inPackets)/\(Self.bytes(port.counters.inBytes))",
                        "\(port.counters.outPackets)/\(Self.bytes(port.counters.outBytes))",
                    ]
                    if detailed { row.append(port.peer ?? "-") }
                    rows.append(row)
                }
                out += table(rows, indent: "  ")
            }
            if let captures = network.captures, !captures.isEmpty {
                out += table(Self.captureRows(captures), indent: "  ")
            }
            if let lost = network.lostPorts, !lost.isEmpty {
                var rows = [["LOST PORT", "PROGRAM", "PID", "MAC", "SWITCH PID", "SWITCH DIED", "HOW"]]
                for loss in lost {
                    for port in loss.ports {
                        rows.append([
                            String(port.port), paint(port.program ?? "-", code: "31"),
                            port.pid.map(String.init) ?? "-", port.macAddresses.joined(separator: ",").orDash,
                            String(loss.switchPID), Self.utcTime(loss.at), loss.detail,
                        ])
                    }
                }
                out += table(rows, indent: "  ")
                out += "  (lost ports do not come back by themselves: restart those VMs or plugs)\n"
            }
        }
        return out
    }

    /// The uplink's line: URL, state, pid, switch port, frames from and to the other hosts, restarts.
    static func uplinkRows(_ uplink: StatusReport.UplinkInfo, paint: (String) -> String) -> [[String]] {
        var header = ["UPLINK", "STATE", "PID", "PORT", "FROM HOSTS PKTS/BYTES", "TO HOSTS PKTS/BYTES", "RESTARTS"]
        let pid: String = uplink.pid.map(String.init) ?? "-"
        let port: String = uplink.switchPort.map(String.init) ?? "-"
        let fromHosts: String = uplink.counters.map { "\($0.inPackets)/\(bytes($0.inBytes))" } ?? "-"
        let toHosts: String = uplink.counters.map { "\($0.outPackets)/\(bytes($0.outBytes))" } ?? "-"
        var row: [String] = [uplink.url, paint(uplink.state), pid, port, fromHosts, toHosts, String(uplink.restarts)]
        if let detail = uplink.detail {
            header.append("DETAIL")
            row.append(detail)
        }
        return [header, row]
    }

    /// A line per running capture: what it captures (the segment, or an endpoint by its
    /// container's name or short ID), its filter, the command's pid, since when, and the frames
    /// the worker handed it and lost for it.
    static func captureRows(_ captures: [CaptureInfo]) -> [[String]] {
        var rows = [["CAPTURE", "TARGET", "FILTER", "PID", "SINCE", "FRAMES", "DROPPED"]]
        for capture in captures {
            let target: String
            if capture.target == "segment" {
                target = "segment"
            } else {
                let name = capture.container.map { $0.hasPrefix("/") ? String($0.dropFirst()) : $0 }
                target = name ?? capture.endpointShortID ?? "endpoint"
            }
            rows.append([
                capture.id, target, capture.filter ?? "-", capture.clientPID.map(String.init) ?? "-",
                utcTime(capture.startedAt / 1000), String(capture.frames), String(capture.dropped),
            ])
        }
        return rows
    }

    /// `2026-12-01 21:30:05 UTC`.
    static func utcTime(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        guard gmtime_r(&time, &parts) != nil else { return "\(seconds)" }
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) UTC"
    }

    /// Pads columns to equal width; colour codes do not count towards the width.
    private func table(_ rows: [[String]], indent: String) -> String {
        var widths = [Int](repeating: 0, count: rows.map(\.count).max() ?? 0)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], Self.visibleWidth(cell)) }
        }
        var out = ""
        for (index, row) in rows.enumerated() {
            var line = indent
            for (i, cell) in row.enumerated() {
                let shown = index == 0 && color ? "\u{1B}[1m\(cell)\u{1B}[0m" : cell
                line += shown
                if i < row.count - 1 { line += String(repeating: " ", count: widths[i] - Self.visibleWidth(cell) + 2) }
            }
            out += line + "\n"
        }
        return out
    }

    private func paint(_ text: String, code: String) -> String {
        color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    private func paint(_ state: String) -> String {
        guard color else { return state }
        let code: String
        switch state {
        case "running", "plugged": code = "32"
        case "starting", "restarting", "unplugged", "stopping", "unreachable", "linkDown": code = "33"
        default: code = "31"
        }
        return "\u{1B}[\(code)m\(state)\u{1B}[0m"
    }

    static func visibleWidth(_ text: String) -> Int {
        var width = 0
        var inEscape = false
        for scalar in text.unicodeScalars {
            if scalar == "\u{1B}" {
                inEscape = true
                continue
            }
            if inEscape {
                if scalar == "m" { inEscape = false }
                continue
            }
            width += 1
        }
        return width
    }

    static func duration(_ seconds: Int64) -> String {
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m\(seconds % 60)s" }
        if seconds < 86400 { return "\(seconds / 3600)h\((seconds % 3600) / 60)m" }
        return "\(seconds / 86400)d\((seconds % 86400) / 3600)h"
    }

    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(count)B" }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)\(units[unit])"
    }
}

extension String {
    var orDash: String { isEmpty ? "-" : self }
}
