@main
struct NetworkerMain {
    static func main() async {}
}
