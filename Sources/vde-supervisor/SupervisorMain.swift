@main
struct SupervisorMain {
    static func main() async {}
}
