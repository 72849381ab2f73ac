"""Herald's contracts: Avro schemas, the wire codec, record headers, ids and the topic catalog."""
