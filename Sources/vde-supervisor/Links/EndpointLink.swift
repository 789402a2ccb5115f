import Shared

/// Computes an endpoint's link at CreateEndpoint: its network's `-o link_*` default overlaid
/// with its own `docker network connect --driver-opt link_*` (issue 13). The supervisor is the
/// only one that derives it; the worker is handed the result (``EndpointSpec/link``).
enum EndpointLink {
    /// The link of a new endpoint, or nil when it is unimpaired and up (no wirefilter, the
    /// record stays as it was before links existed). Throws the parser's error on a bad or
    /// unknown user option, or a combination ``LinkImpairment/check()`` refuses.
    static func compute(networkDefault: LinkImpairment?, endpointOptions: [String: DockerAPI.OptionValue]?)
        throws(VDEError) -> LinkSettings?
    {
        let own = try LinkImpairment.parse(endpointOptions: userOptions(endpointOptions ?? [:]))
        let impairment = (networkDefault ?? LinkImpairment()).overlaid(with: own)
        try impairment.check()
        let settings = LinkSettings(impairment: impairment)
        return settings.isDefault ? nil : settings
    }

    /// The keys the user may have set (no dot: dockerd's own keys are namespaced,
    /// `com.docker.network.endpoint.exposedports`, and carry arrays and maps), as strings.
    /// `--driver-opt` values are strings; anything else under a user key is shown as the JSON
    /// it was, so the parser's error names it.
    static func userOptions(_ options: [String: DockerAPI.OptionValue]) -> [String: String] {
        var strings: [String: String] = [:]
        for (key, value) in options where !key.contains(".") {
            switch value {
            case .string(let text): strings[key] = text
            case .bool(let flag): strings[key] = flag ? "true" : "false"
            case .number(let number): strings[key] = "\(number)"
            case .map: strings[key] = "{...}"
            case .other: strings[key] = "(not a string)"
            }
        }
        return strings
    }
}
