package node

// setupSessions wires the sessions capability into the node (see its issue).
func (n *Node) setupSessions() error { return nil }
