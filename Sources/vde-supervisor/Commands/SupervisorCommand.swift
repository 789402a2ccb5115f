import ArgumentParser
import Shared

/// `vde-supervisor`: the Docker network plugin for VDE2 networks.
@main
struct SupervisorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vde-supervisor",
        abstract: "Docker network and IPAM plugin that puts containers and VMs on VDE2 layer-2 networks.",
        version: Installation.version,
        subcommands: [
            RunCommand.self, StatusCommand.self, LinkCommand.self, CaptureCommand.self, StopNetworksCommand.self,
        ],
        defaultSubcommand: RunCommand.self)
}
