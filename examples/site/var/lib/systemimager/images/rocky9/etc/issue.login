Rocky Linux 9.4 - login node (class login)
