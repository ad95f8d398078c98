"""Channels: where payers come in. Each reads its bytes into a `switch.flow.messages.Request`,
hands it to the transaction core, and writes the `Answer` back in its own bytes. A channel
authenticates its peer and speaks its protocol; it holds no business rule."""
