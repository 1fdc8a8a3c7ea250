// Command sqliteonly is a program that uses asyncmonolith with SQLite only: deps_test.go
// checks that it links neither PostgreSQL's nor MySQL's driver.
package main

import (
	"log"

	"github.com/asyncmonolith/asyncmonolith"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
)

func main() {
	db, err := gorm.Open(sqlite.Open("file:sqliteonly.db"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := db.Use(asyncmonolith.New(asyncmonolith.Config{})); err != nil {
		log.Fatal(err)
	}
}
