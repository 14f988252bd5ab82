"""Local stand-ins for the outside services, speaking their documented wire formats over real
sockets: used by the tests, by ``make run``'s demo and by docker-compose-dev."""
