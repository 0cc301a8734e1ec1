"""Message broker access: topology (what to declare) and the AMQP client."""
