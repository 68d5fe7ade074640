//! `kubectl procwatch sockets`: listening TCP/UDP and unix sockets per pod and container, like
//! `ss -lntux -p`, with the path another container of the pod connects to.

use procwatch_crds::SocketProtocol;

use crate::table::{self, Width, number, text};
use crate::view::{Filter, Input, gaps, with_notes};

pub fn render(input: &Input, filter: &Filter, width: Width) -> String {
    let columns = input.columns([
        text("PROTO"),
        text("ADDRESS/PATH"),
        number("PID"),
        text("PROGRAM"),
        text("REACHABLE-AT"),
    ]);
    let mut rows = Vec::new();
    for c in input.containers(filter) {
        let mut sockets: Vec<_> = c.container.listening.iter().collect();
        sockets.sort();
        for socket in sockets {
            let program = socket.pid.and_then(|pid| {
                c.container
                    .processes
                    .iter()
                    .find(|p| p.pid == pid)
                    .map(|p| p.command.as_str())
            });
            let mut cells = input.place(&c);
            cells.extend([
                match socket.protocol {
                    SocketProtocol::Tcp => "TCP",
                    SocketProtocol::Udp => "UDP",
                    SocketProtocol::Unix => "Unix",
                }
                .to_string(),
                table::or_none(socket.address.as_deref().or(socket.path.as_deref())),
                socket
                    .pid
                    .map_or_else(|| "<none>".into(), |p| p.to_string()),
                table::or_none(program),
                table::or_none(socket.reachable_at.as_deref()),
            ]);
            rows.push(cells);
        }
    }
    with_notes(table::render(&columns, &rows, width), &gaps(input, filter))
}
