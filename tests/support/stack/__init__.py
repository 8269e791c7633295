"""The synthesized stack, executed offline: its resources stood up on DynamoDB Local, moto's server
and a shared OpenSearch stand-in, its functions run as Lambda would run them (each in a process of
its own, with the environment the template gives it), and every AWS and OpenSearch call they make
checked against the IAM policy the template gives their role (and the domain's access policy)."""
